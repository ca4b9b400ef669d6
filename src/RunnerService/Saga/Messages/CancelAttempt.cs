namespace RunnerService.Saga.Messages;

/// <summary>
/// Saga → the owning replica's own queue: kill this attempt's worker (running: SIGTERM, SIGKILL after the kill grace;
/// paused: at once), complete it as Cancelled, and cancel the sub-invocations it started.
/// </summary>
public record CancelAttempt
{
    public Guid InvocationId { get; init; }
    public int Attempt { get; init; }

    /// <summary>The completion's error message: who asked and why.</summary>
    public string Message { get; init; } = "";
}
