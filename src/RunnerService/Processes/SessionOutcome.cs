using System.Text.Json;
using RunnerService.Contracts;

namespace RunnerService.Processes;

/// <summary>Where a worker session stopped: it ended (final status), or it waits for other invocations.</summary>
abstract record SessionOutcome
{
    public sealed record Final(InvocationStatus Status, JsonElement? Result, InvocationError? Error, bool Retryable = false) : SessionOutcome;

    public sealed record Waiting(IReadOnlyList<Guid> InvocationIds) : SessionOutcome;

    /// <summary>The service took the worker away (shutdown): it was killed and the invocation is rerouted elsewhere.</summary>
    public sealed record Aborted : SessionOutcome;

    public static Final Failed(string type, string message, string? details = null) =>
        new(InvocationStatus.Failed, null, new InvocationError { Type = type, Message = message, Details = details });
}
