using System.Text.Json;

namespace RunnerService.Contracts;

/// <summary>The invocation reached its final status. Published exactly once per finished run.</summary>
public record InvocationCompleted
{
    public Guid InvocationId { get; init; }
    public string TaskName { get; init; } = "";
    public Guid? ParentInvocationId { get; init; }
    public InvocationStatus Status { get; init; }

    /// <summary>The task's result when <see cref="Status"/> is Succeeded.</summary>
    public JsonElement? Result { get; init; }

    /// <summary>What went wrong when the invocation did not succeed.</summary>
    public InvocationError? Error { get; init; }

    public string RunnerInstance { get; init; } = "";

    /// <summary>Pid of the worker process, 0 when none was started.</summary>
    public int ProcessId { get; init; }

    public int Attempt { get; init; } = 1;

    /// <summary>Time from submission until a replica started the worker.</summary>
    public TimeSpan QueuedFor { get; init; }

    /// <summary>Time from the worker's start until its end.</summary>
    public TimeSpan RunFor { get; init; }

    public DateTimeOffset CompletedAt { get; init; }
}
