namespace RunnerService.Contracts;

/// <summary>A running invocation asked for the results of others; its worker is paused and holds no slot.</summary>
public record InvocationWaitingFor
{
    public Guid InvocationId { get; init; }
    public IReadOnlyList<Guid> WaitingFor { get; init; } = [];
    public string RunnerInstance { get; init; } = "";

    /// <summary>The address of the replica's own queue (<c>exchange:runner-instance-…</c>, its exchange): where <see cref="ResumeInvocation"/> must be sent.</summary>
    public Uri? RunnerAddress { get; init; }

    public int ProcessId { get; init; }
    public int Attempt { get; init; } = 1;
    public DateTimeOffset PausedAt { get; init; }

    /// <summary>Counts the waits of this attempt (1, 2, …), so late events about an earlier wait are recognised.</summary>
    public int WaitSequence { get; init; }
}
