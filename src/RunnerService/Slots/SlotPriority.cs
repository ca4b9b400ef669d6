namespace RunnerService.Slots;

public enum SlotPriority
{
    /// <summary>A new invocation from the shared queue.</summary>
    Normal = 0,

    /// <summary>A paused child being resumed: it already holds work in progress, so it goes first.</summary>
    Resume = 1,
}
