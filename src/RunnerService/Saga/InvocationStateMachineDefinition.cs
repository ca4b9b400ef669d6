using MassTransit;

namespace RunnerService.Saga;

/// <summary>
/// The saga endpoint, shared by all replicas. Messages it publishes (resumes, notices to other instances) leave only
/// after the instance is stored (in-memory outbox); a concurrency conflict is retried with the fresh instance.
/// </summary>
public sealed class InvocationStateMachineDefinition : SagaDefinition<InvocationState>
{
    readonly bool _quorum;

    public InvocationStateMachineDefinition(Microsoft.Extensions.Options.IOptions<Hosting.RunnerOptions> options)
    {
        _quorum = options.Value.QuorumQueues;
        EndpointName = "invocation-state";
        ConcurrentMessageLimit = 16;
    }

    protected override void ConfigureSaga(IReceiveEndpointConfigurator endpointConfigurator, ISagaConfigurator<InvocationState> sagaConfigurator,
        IRegistrationContext context)
    {
        endpointConfigurator.PrefetchCount = 32;
        if (_quorum && endpointConfigurator is IRabbitMqReceiveEndpointConfigurator rabbit)
            rabbit.SetQuorumQueue();
        endpointConfigurator.UseMessageRetry(r =>
        {
            r.Handle<ConcurrencyException>();
            r.Handle<Microsoft.Data.Sqlite.SqliteException>();
            r.Handle<Npgsql.NpgsqlException>(e => e.IsTransient);
            r.Intervals(10, 50, 100, 250, 500, 1000, 2000);
        });
        endpointConfigurator.UseInMemoryOutbox(context);
    }
}
