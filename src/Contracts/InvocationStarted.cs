namespace RunnerService.Contracts;

/// <summary>A replica took the invocation and its worker process is running.</summary>
public record InvocationStarted
{
    public Guid InvocationId { get; init; }
    public string TaskName { get; init; } = "";
    public Guid? ParentInvocationId { get; init; }

    /// <summary>Instance id of the replica that owns the running process.</summary>
    public string RunnerInstance { get; init; } = "";

    /// <summary>The address of the replica's own queue (<c>exchange:runner-instance-…</c>, its exchange): resumes and control messages go there.</summary>
    public Uri? RunnerAddress { get; init; }

    /// <summary>Operating-system pid of the worker process.</summary>
    public int ProcessId { get; init; }

    /// <summary>1 for the first run; grows when the invocation is run again.</summary>
    public int Attempt { get; init; } = 1;

    public DateTimeOffset StartedAt { get; init; }
}
