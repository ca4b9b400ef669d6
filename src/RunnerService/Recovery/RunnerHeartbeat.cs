namespace RunnerService.Recovery;

/// <summary>Every replica publishes this periodically; a replica that stops is noticed by the others.</summary>
public record RunnerHeartbeat
{
    public string Instance { get; init; } = "";
    public Uri? Address { get; init; }
    public DateTimeOffset At { get; init; }
    public int SlotsTotal { get; init; }
    public int SlotsBusy { get; init; }
    public int WorkersAlive { get; init; }
}
