using MassTransit;
using MassTransit.Configuration;
using MassTransit.Middleware;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
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
        // Two body forms: a MassTransit envelope (its content type, or none) and the raw RunInvocation object
        // (application/json), for publishers without MassTransit (docs/wire-format.md). Replies stay envelopes.
        endpointConfigurator.UseRawJsonDeserializer(RawSerializerOptions.AnyMessageType, isDefault: false);
        // Before the message-type router (a plain UseFilter would sit behind it, where a wrong type is never seen).
        endpointConfigurator.AddPrePipeSpecification(new FilterPipeSpecification<ConsumeContext>(new RequireRunInvocationFilter()));
        // No retry filter: a message that cannot run faults once. Its publisher gets a Failed completion when its id
        // can be read, then MassTransit's own filters move it to the error queue with the reason.
        // Resolved on first use: the executor needs the bus, which is being built right now.
        var rejections = new RejectInvalidInvocationFilter(new Lazy<InvocationExecutor>(context.GetRequiredService<InvocationExecutor>),
            context.GetRequiredService<ILoggerFactory>().CreateLogger<RunInvocationConsumer>());
        endpointConfigurator.ConfigureError(error =>
        {
            error.UseFilter(rejections);
            error.UseFilter(new GenerateFaultFilter());
            error.UseFilter(new ErrorTransportFilter());
        });
    }
}
