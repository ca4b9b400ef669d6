namespace RunnerService.Saga.Messages;

/// <summary>
/// Owner replica → saga: the saga records this wait as answered (<c>Resuming</c>), but the worker is still paused
/// and no resume arrived (one can be lost with a broker connection). The saga sends the same resume again; the
/// replica applies a resume at most once per (invocation, attempt, wait number).
/// </summary>
public record ResendResume
{
    public Guid InvocationId { get; init; }
    public int Attempt { get; init; }
    public int WaitSequence { get; init; }
}
