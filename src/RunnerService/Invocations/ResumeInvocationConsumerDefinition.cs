using MassTransit;
using Microsoft.Extensions.Options;
using RunnerService.Hosting;

namespace RunnerService.Invocations;

/// <summary>This replica's own queue (named from its instance id): resumes for the workers it holds paused.</summary>
sealed class ResumeInvocationConsumerDefinition : ConsumerDefinition<ResumeInvocationConsumer>
{
    readonly int _slots;

    public ResumeInvocationConsumerDefinition(IOptions<RunnerOptions> options)
    {
        _slots = options.Value.EffectiveSlots;
        EndpointName = options.Value.InstanceQueue;
        // Resumes wait for a slot inside the consumer (ahead of new invocations), so let enough of them in.
        ConcurrentMessageLimit = Math.Max(_slots * 4, 16);
    }

    protected override void ConfigureConsumer(IReceiveEndpointConfigurator endpointConfigurator, IConsumerConfigurator<ResumeInvocationConsumer> consumerConfigurator,
        IRegistrationContext context)
    {
        endpointConfigurator.PrefetchCount = Math.Max(_slots * 4, 16);
        // Only sent to directly, never bound to the shared message exchanges.
        endpointConfigurator.ConfigureConsumeTopology = false;
    }
}
