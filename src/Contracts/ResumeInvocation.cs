using RunnerService.Contracts.Protocol;

namespace RunnerService.Contracts;

/// <summary>Sent to the owning replica's own queue: everything the paused invocation waited for is final.</summary>
public record ResumeInvocation
{
    public Guid InvocationId { get; init; }
    public int Attempt { get; init; } = 1;
    public IReadOnlyList<DependencyOutcome> Results { get; init; } = [];
}
