using System.Text.Json;
using System.Text.Json.Serialization;

namespace RunnerService.Contracts.Protocol;

/// <summary>
/// One line of the worker protocol: a JSON object whose <c>type</c> names the message.
/// See docs/protocol.md; every message type is listed there with an example line.
/// </summary>
[JsonPolymorphic(TypeDiscriminatorPropertyName = "type")]
[JsonDerivedType(typeof(StartInvocationMessage), "invocation")]
[JsonDerivedType(typeof(ResumeMessage), "resume")]
[JsonDerivedType(typeof(HelloMessage), "hello")]
[JsonDerivedType(typeof(LogMessage), "log")]
[JsonDerivedType(typeof(ProgressMessage), "progress")]
[JsonDerivedType(typeof(InvokeMessage), "invoke")]
[JsonDerivedType(typeof(WaitMessage), "wait")]
[JsonDerivedType(typeof(ResultMessage), "result")]
[JsonDerivedType(typeof(ErrorMessage), "error")]
public abstract record WorkerMessage;

/// <summary>Runner → worker, the first line on stdin: the invocation to run.</summary>
public sealed record StartInvocationMessage : WorkerMessage
{
    public int Protocol { get; init; } = WorkerProtocol.Version;
    public Guid InvocationId { get; init; }
    public string TaskName { get; init; } = "";
    public JsonElement? Arguments { get; init; }
    public Guid? ParentInvocationId { get; init; }
    public int Attempt { get; init; } = 1;

    /// <summary>W3C traceparent of the runner's span, so the worker can join the trace.</summary>
    public string? TraceParent { get; init; }

    /// <summary>
    /// Reuse mode: after its <c>result</c> or <c>error</c> the worker may stay and read the next <c>invocation</c>
    /// line (it exits at the end of stdin). False or absent: exit after the outcome, as always.
    /// </summary>
    public bool Reuse { get; init; }
}

/// <summary>Runner → worker, after a <c>wait</c>: the outcomes of what the worker waited for.</summary>
public sealed record ResumeMessage : WorkerMessage
{
    public IReadOnlyList<DependencyOutcome> Results { get; init; } = [];
}

/// <summary>The final outcome of one awaited invocation.</summary>
public sealed record DependencyOutcome
{
    public Guid InvocationId { get; init; }
    public InvocationStatus Status { get; init; }
    public JsonElement? Result { get; init; }
    public InvocationError? Error { get; init; }
}

/// <summary>Worker → runner, the first line on stdout: the protocol version the worker speaks.</summary>
public sealed record HelloMessage : WorkerMessage
{
    public int Protocol { get; init; } = WorkerProtocol.Version;
    public int Pid { get; init; }

    /// <summary>The worker can run further invocations after an outcome when the runner offers it (<c>reuse</c>).</summary>
    public bool Reusable { get; init; }
}

/// <summary>Worker → runner: a log line for the invocation's log scope.</summary>
public sealed record LogMessage : WorkerMessage
{
    public string Level { get; init; } = "info";
    public string Message { get; init; } = "";
}

/// <summary>Worker → runner: optional progress report (0..1).</summary>
public sealed record ProgressMessage : WorkerMessage
{
    public double Fraction { get; init; }
    public string? Message { get; init; }
}

/// <summary>Worker → runner: start a sub-invocation (the worker chooses its id).</summary>
public sealed record InvokeMessage : WorkerMessage
{
    public Guid InvocationId { get; init; }
    public string TaskName { get; init; } = "";
    public JsonElement? Arguments { get; init; }
    public TimeSpan? Timeout { get; init; }
}

/// <summary>Worker → runner: I need the results of these invocations before I can go on.</summary>
public sealed record WaitMessage : WorkerMessage
{
    public IReadOnlyList<Guid> InvocationIds { get; init; } = [];
}

/// <summary>Worker → runner, final: the task succeeded with this result.</summary>
public sealed record ResultMessage : WorkerMessage
{
    public JsonElement? Result { get; init; }
}

/// <summary>Worker → runner, final: the task failed.</summary>
public sealed record ErrorMessage : WorkerMessage
{
    public InvocationError Error { get; init; } = new();

    /// <summary>When true the runner may retry the invocation (if its attempts allow).</summary>
    public bool Retryable { get; init; }
}
