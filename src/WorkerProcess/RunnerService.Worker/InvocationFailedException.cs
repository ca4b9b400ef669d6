using RunnerService.Contracts;

namespace RunnerService.Worker;

/// <summary>A sub-invocation the task waited for did not succeed; carries that invocation's error.</summary>
public sealed class InvocationFailedException(Guid invocationId, InvocationStatus status, InvocationError error)
    : Exception($"Sub-invocation {invocationId} ended {status}: {error.Type}: {error.Message}")
{
    public Guid InvocationId { get; } = invocationId;
    public InvocationStatus Status { get; } = status;
    public InvocationError Error { get; } = error;
}
