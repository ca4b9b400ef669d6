namespace RunnerService.Contracts;

/// <summary>A paused invocation got its results and its worker runs again (SIGCONT).</summary>
public record InvocationResumed
{
    public Guid InvocationId { get; init; }
    public string RunnerInstance { get; init; } = "";
    public int ProcessId { get; init; }
    public int Attempt { get; init; } = 1;
    public TimeSpan PausedFor { get; init; }
    public DateTimeOffset ResumedAt { get; init; }

    /// <summary>The wait (see <see cref="InvocationWaitingFor.WaitSequence"/>) this resume ended.</summary>
    public int WaitSequence { get; init; }
}
