using MassTransit;
using RunnerService.Contracts;
using RunnerService.Saga.Messages;

namespace RunnerService.Saga;

/// <summary>
/// The saga endpoint, shared by all replicas. Messages it publishes (resumes, notices to other instances) leave only
/// after the instance is stored (in-memory outbox); a concurrency conflict is retried with the fresh instance.
/// </summary>
public sealed class InvocationStateMachineDefinition : SagaDefinition<InvocationState>
{
    public InvocationStateMachineDefinition()
    {
        EndpointName = "invocation-state";
        ConcurrentMessageLimit = 16;
    }

    protected override void ConfigureSaga(IReceiveEndpointConfigurator endpointConfigurator, ISagaConfigurator<InvocationState> sagaConfigurator,
        IRegistrationContext context)
    {
        endpointConfigurator.PrefetchCount = 32;
        // Events for one invocation are handled one after another on this replica (the store's row lock serializes
        // them across replicas): no retry storms when a parent's children finish at the same moment.
        var partitioner = endpointConfigurator.CreatePartitioner(ConcurrentMessageLimit ?? 16);
        endpointConfigurator.UsePartitioner<TrackInvocation>(partitioner, c => c.Message.InvocationId);
        endpointConfigurator.UsePartitioner<InvocationWaitingFor>(partitioner, c => c.Message.InvocationId);
        endpointConfigurator.UsePartitioner<InvocationResumed>(partitioner, c => c.Message.InvocationId);
        endpointConfigurator.UsePartitioner<InvocationCompleted>(partitioner, c => c.Message.InvocationId);
        endpointConfigurator.UsePartitioner<RegisterWaiter>(partitioner, c => c.Message.InvocationId);
        endpointConfigurator.UsePartitioner<UpstreamChanged>(partitioner, c => c.Message.InvocationId);
        endpointConfigurator.UsePartitioner<DependencyFinished>(partitioner, c => c.Message.WaiterId);
        endpointConfigurator.UsePartitioner<ClaimInvocation>(partitioner, c => c.Message.InvocationId);
        endpointConfigurator.UsePartitioner<RecoverInvocation>(partitioner, c => c.Message.InvocationId);
        endpointConfigurator.UsePartitioner<ResendResume>(partitioner, c => c.Message.InvocationId);
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
