namespace RunnerService.Saga.Messages;

/// <summary>
/// Replica → saga: <see cref="Owner"/> is gone (stopped heartbeating, or restarted without its workers); run the
/// invocation again. Applied only if the saga still records that owner and attempt, so it happens exactly once.
/// </summary>
public record RecoverInvocation
{
    public Guid InvocationId { get; init; }
    public string Owner { get; init; } = "";
    public int Attempt { get; init; }
    public string RecoveredBy { get; init; } = "";
}
