using RunnerService.Contracts.Protocol;

namespace RunnerService.Saga.Messages;

/// <summary>Saga → saga: an invocation <see cref="WaiterId"/> waits for reached its final status (or the wait was refused).</summary>
public record DependencyFinished
{
    public Guid WaiterId { get; init; }
    public DependencyOutcome Outcome { get; init; } = new();
}
