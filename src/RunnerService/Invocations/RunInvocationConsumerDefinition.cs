using MassTransit;
using Microsoft.Extensions.Options;
using RunnerService.Hosting;

namespace RunnerService.Invocations;

/// <summary>
/// The shared invocation queue. <c>PrefetchCount = ConcurrentMessageLimit = slots</c>: the broker hands this replica
/// exactly as many messages as it can run, the rest stay ready for other replicas.
/// </summary>
sealed class RunInvocationConsumerDefinition : ConsumerDefinition<RunInvocationConsumer>
{
    readonly int _slots;

    public RunInvocationConsumerDefinition(IOptions<RunnerOptions> options)
    {
        _slots = options.Value.EffectiveSlots;
        EndpointName = options.Value.InvocationQueue;
        ConcurrentMessageLimit = _slots;
    }

    protected override void ConfigureConsumer(IReceiveEndpointConfigurator endpointConfigurator, IConsumerConfigurator<RunInvocationConsumer> consumerConfigurator,
        IRegistrationContext context)
    {
        endpointConfigurator.PrefetchCount = _slots;
        endpointConfigurator.ConcurrentMessageLimit = _slots;
        // No retry filter: an invalid message faults once and MassTransit moves it to the error queue with the reason.
    }
}
