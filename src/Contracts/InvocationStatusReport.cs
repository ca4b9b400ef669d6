using System.Text.Json;

namespace RunnerService.Contracts;

/// <summary>The saga's record of one invocation.</summary>
public record InvocationStatusReport
{
    public Guid InvocationId { get; init; }

    /// <summary>False when the saga has never heard of the invocation.</summary>
    public bool Found { get; init; }

    /// <summary>The saga state: Expected, Submitted, Running, Waiting, Resuming, Succeeded, Failed, TimedOut, Cancelled.</summary>
    public string Status { get; init; } = "";

    public string? TaskName { get; init; }
    public Guid? ParentInvocationId { get; init; }
    public string? OwnerInstance { get; init; }
    public int ProcessId { get; init; }
    public int Attempt { get; init; }
    public IReadOnlyList<Guid> WaitingFor { get; init; } = [];
    public IReadOnlyList<Guid> Waiters { get; init; } = [];

    /// <summary>
    /// Every invocation this one has waited for, in the order of its waits, each once: the sub-invocations it started
    /// and waited for, and any other invocation it waited for by id. Each has a report of its own.
    /// </summary>
    public IReadOnlyList<Guid> Children { get; init; } = [];
    /// <summary>The last progress the task reported (throttled to one event per <c>Runner:ProgressInterval</c>).</summary>
    public InvocationProgress? Progress { get; init; }

    /// <summary>Set once a cancel was asked for (who asked and why), until and after it takes effect.</summary>
    public string? CancelRequested { get; init; }

    public JsonElement? Result { get; init; }
    public InvocationError? Error { get; init; }
    public IReadOnlyList<StatusChange> History { get; init; } = [];
}

/// <summary>One transition in an invocation's status history.</summary>
public record StatusChange
{
    public string From { get; init; } = "";
    public string To { get; init; } = "";
    public DateTimeOffset At { get; init; }
    public string? Replica { get; init; }
    public int Attempt { get; init; }
}
