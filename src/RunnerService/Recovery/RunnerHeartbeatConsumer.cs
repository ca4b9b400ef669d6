using MassTransit;

namespace RunnerService.Recovery;

/// <summary>Records every replica's heartbeat (on a temporary queue of this replica).</summary>
sealed class RunnerHeartbeatConsumer(RunnerRegistry registry) : IConsumer<RunnerHeartbeat>
{
    public Task Consume(ConsumeContext<RunnerHeartbeat> context)
    {
        registry.Seen(context.Message.Instance, context.Message.At);
        return Task.CompletedTask;
    }
}
