using RunnerService.Contracts.Protocol;

namespace RunnerService.Contracts;

/// <summary>Sent to the owning replica's own queue: everything the paused invocation waited for is final.</summary>
public record ResumeInvocation
{
    public Guid InvocationId { get; init; }
    public int Attempt { get; init; } = 1;

    /// <summary>The wait this resume answers (see <see cref="InvocationWaitingFor.WaitSequence"/>).</summary>
    public int WaitSequence { get; init; }
    public IReadOnlyList<DependencyOutcome> Results { get; init; } = [];
}
