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
    readonly bool _quorum;

    public RunInvocationConsumerDefinition(IOptions<RunnerOptions> options)
    {
        _slots = options.Value.EffectiveSlots;
        _quorum = options.Value.QuorumQueues;
        EndpointName = options.Value.InvocationQueue;
        ConcurrentMessageLimit = _slots;
    }

    protected override void ConfigureConsumer(IReceiveEndpointConfigurator endpointConfigurator, IConsumerConfigurator<RunInvocationConsumer> consumerConfigurator,
        IRegistrationContext context)
    {
        endpointConfigurator.PrefetchCount = _slots;
        endpointConfigurator.ConcurrentMessageLimit = _slots;
        // Replicated across a RabbitMQ cluster; the queue type cannot change once the queue exists.
        if (_quorum && endpointConfigurator is IRabbitMqReceiveEndpointConfigurator rabbit)
            rabbit.SetQuorumQueue();
        // No retry filter: an invalid message faults once and MassTransit moves it to the error queue with the reason.
    }
}
