using System.Text.Json;
using MassTransit;
using RunnerService.Contracts;
using RunnerService.Contracts.Protocol;

namespace RunnerService.Saga;

/// <summary>The saga instance: the durable record of one invocation and of who waits for whom.</summary>
public sealed class InvocationState : SagaStateMachineInstance, ISagaVersion
{
    public Guid CorrelationId { get; set; }
    public string CurrentState { get; set; } = "";
    public int Version { get; set; }

    public string? TaskName { get; set; }
    public Guid? ParentInvocationId { get; set; }

    /// <summary>What the publisher asked for, kept so a recovery can run the invocation again.</summary>
    public JsonElement? Arguments { get; set; }
    public TimeSpan? Timeout { get; set; }
    public int? MaxAttempts { get; set; }
    public string? ReplyTo { get; set; }

    /// <summary>Instance id and own queue of the replica that runs (or holds the paused) worker.</summary>
    public string? OwnerInstance { get; set; }
    public Uri? OwnerAddress { get; set; }
    public int ProcessId { get; set; }
    public int Attempt { get; set; }

    /// <summary>What the invocation waits for right now, and the outcomes collected so far.</summary>
    public List<Guid> WaitingFor { get; set; } = [];

    /// <summary>Number of the current (or last) wait of this attempt; events about older waits are stale.</summary>
    public int WaitSequence { get; set; }
    public List<DependencyOutcome> Collected { get; set; } = [];

    /// <summary>The last progress event of the current attempt (for status reports).</summary>
    public InvocationProgress? LastProgress { get; set; }

    /// <summary>Set once a cancel is asked for: the completion's error message (who asked and why).</summary>
    public string? CancelMessage { get; set; }

    /// <summary>Every invocation this one has waited for, in the order of its waits (for status reports).</summary>
    public List<Guid> Children { get; set; } = [];

    /// <summary>Invocations waiting for this one, told when it is final.</summary>
    public List<Guid> Waiters { get; set; } = [];

    /// <summary>
    /// For each waiter, the earliest of its attempts known to wait for this one. A parent's wait reaches the saga only
    /// after the broker took the sub-invocations it started, so an entry below a parent's current attempt proves that
    /// this invocation's own message was published by an earlier attempt.
    /// </summary>
    public Dictionary<Guid, int> FirstWaitAttempts { get; set; } = [];

    /// <summary>Every invocation known to wait (directly or transitively) for this one: the cycle check.</summary>
    public List<Guid> Upstream { get; set; } = [];

    public InvocationStatus? FinalStatus { get; set; }
    public JsonElement? Result { get; set; }
    public InvocationError? Error { get; set; }

    public List<StatusChange> History { get; set; } = [];

    /// <summary>Each recovery of this invocation from a lost replica (when, which attempt, by whom).</summary>
    public List<string> Recoveries { get; set; } = [];
    public DateTimeOffset CreatedAt { get; set; }
    public DateTimeOffset UpdatedAt { get; set; }

    public bool AllCollected => WaitingFor.Count > 0 && WaitingFor.All(id => Collected.Any(c => c.InvocationId == id));

    public DependencyOutcome Outcome() => new()
    {
        InvocationId = CorrelationId,
        Status = FinalStatus ?? InvocationStatus.Failed,
        Result = Result,
        Error = Error,
    };
}
