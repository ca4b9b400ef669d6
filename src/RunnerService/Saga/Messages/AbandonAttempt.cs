namespace RunnerService.Saga.Messages;

/// <summary>
/// Saga → a replica's own queue: the attempt this replica holds is no longer the invocation's current one (it was
/// rerouted while this replica was presumed gone). The replica kills that attempt's worker; nothing is rerouted.
/// </summary>
public record AbandonAttempt
{
    public Guid InvocationId { get; init; }
    public int Attempt { get; init; }
    public string Reason { get; init; } = "";
}
