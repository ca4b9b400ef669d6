using MassTransit;

namespace RunnerService.Recovery;

/// <summary>Records every replica's heartbeat (on a temporary queue of this replica).</summary>
sealed class RunnerHeartbeatConsumer(RunnerRegistry registry) : IConsumer<RunnerHeartbeat>
{
    public Task Consume(ConsumeContext<RunnerHeartbeat> context)
    {
        // Judged on this replica's own clock, when the heartbeat arrived: the sender's clock may be skewed.
        registry.Seen(context.Message.Instance);
        return Task.CompletedTask;
    }
}
