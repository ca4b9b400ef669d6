using RunnerService.Contracts.Protocol;

namespace RunnerService.Processes;

/// <summary>What a worker's stdout said next, as the session needs it.</summary>
abstract record WorkerEvent
{
    /// <summary>A well-formed protocol message the worker may send.</summary>
    public sealed record Received(WorkerMessage Message) : WorkerEvent;

    /// <summary>The worker broke the protocol; it must be killed and the invocation fails with this error.</summary>
    public sealed record Violation(string ErrorType, string Message, string? Details = null) : WorkerEvent;

    /// <summary>stdout ended (or was abandoned after the worker's exit); <see cref="PartialLine"/> when mid-line.</summary>
    public sealed record Closed(string? PartialLine) : WorkerEvent;
}
