using System.Text.Json;
using System.Text.Json.Serialization;
using MassTransit;
using MassTransit.Context;
using MassTransit.Middleware;
using MassTransit.Saga;

namespace RunnerService.Saga.Persistence;

/// <summary>
/// Plugs <see cref="ISagaStore"/> into MassTransit: one store transaction per consumed event, committed after the
/// state machine ran; instances are JSON documents with optimistic versions.
/// </summary>
public sealed class InvocationSagaRepositoryContextFactory(ISagaStore store, ISagaConsumeContextFactory<ISagaStoreTransaction, InvocationState> factory) :
    ISagaRepositoryContextFactory<InvocationState>,
    ILoadSagaRepositoryContextFactory<InvocationState>,
    IQuerySagaRepositoryContextFactory<InvocationState>
{
    internal static readonly JsonSerializerOptions JsonOptions = new(JsonSerializerDefaults.Web) { Converters = { new JsonStringEnumConverter() } };

    public void Probe(ProbeContext context) => context.Add("persistence", "runner-saga-store");

    public async Task Send<T>(ConsumeContext<T> context, IPipe<SagaRepositoryContext<InvocationState, T>> next) where T : class
    {
        await using var transaction = await store.BeginAsync(context.CancellationToken).ConfigureAwait(false);
        var repositoryContext = new RepositoryContext<T>(transaction, context, factory);
        await next.Send(repositoryContext).ConfigureAwait(false);
        await transaction.CommitAsync(context.CancellationToken).ConfigureAwait(false);
    }

    /// <summary>Every event of the invocation saga correlates by id; a query would load the whole table, so there is none.</summary>
    public Task SendQuery<T>(ConsumeContext<T> context, ISagaQuery<InvocationState> query, IPipe<SagaRepositoryQueryContext<InvocationState, T>> next)
        where T : class =>
        throw new NotSupportedException("The invocation saga store does not query by expression: correlate events by invocation id.");

    public Task<T> Execute<T>(Func<LoadSagaRepositoryContext<InvocationState>, Task<T>> asyncMethod, CancellationToken cancellationToken = default) where T : class =>
        ExecuteAsync(asyncMethod, cancellationToken);

    public Task<T> Execute<T>(Func<QuerySagaRepositoryContext<InvocationState>, Task<T>> asyncMethod, CancellationToken cancellationToken = default) where T : class =>
        ExecuteAsync(asyncMethod, cancellationToken);

    async Task<T> ExecuteAsync<T>(Func<StandaloneContext, Task<T>> asyncMethod, CancellationToken cancellationToken)
    {
        await using var transaction = await store.BeginAsync(cancellationToken).ConfigureAwait(false);
        var result = await asyncMethod(new StandaloneContext(transaction, cancellationToken)).ConfigureAwait(false);
        await transaction.CommitAsync(cancellationToken).ConfigureAwait(false);
        return result;
    }

    internal static InvocationState Deserialize(StoredSaga stored)
    {
        var saga = JsonSerializer.Deserialize<InvocationState>(stored.Data, JsonOptions)
            ?? throw new InvalidDataException($"saga {stored.Id} has an empty document");
        saga.Version = stored.Version;
        return saga;
    }

    internal static StoredSaga Serialize(InvocationState saga) =>
        new(saga.CorrelationId, saga.CurrentState, saga.OwnerInstance, saga.Version, JsonSerializer.Serialize(saga, JsonOptions));

    sealed class RepositoryContext<T>(ISagaStoreTransaction transaction, ConsumeContext<T> consumeContext, ISagaConsumeContextFactory<ISagaStoreTransaction, InvocationState> factory)
        : ConsumeContextScope<T>(consumeContext), SagaRepositoryContext<InvocationState, T>
        where T : class
    {
        readonly ConsumeContext<T> _context = consumeContext;

        public Task<SagaConsumeContext<InvocationState, TMessage>> CreateSagaConsumeContext<TMessage>(ConsumeContext<TMessage> consumeContext, InvocationState instance,
            SagaConsumeContextMode mode) where TMessage : class =>
            factory.CreateSagaConsumeContext(transaction, consumeContext, instance, mode);

        public Task<SagaConsumeContext<InvocationState, T>> Add(InvocationState instance) =>
            factory.CreateSagaConsumeContext(transaction, _context, instance, SagaConsumeContextMode.Add);

        public async Task<SagaConsumeContext<InvocationState, T>> Insert(InvocationState instance)
        {
            instance.Version = 1;
            await transaction.InsertAsync(Serialize(instance), CancellationToken).ConfigureAwait(false);
            return await factory.CreateSagaConsumeContext(transaction, _context, instance, SagaConsumeContextMode.Insert).ConfigureAwait(false);
        }

        public async Task<SagaConsumeContext<InvocationState, T>> Load(Guid correlationId)
        {
            var stored = await transaction.LoadAsync(correlationId, CancellationToken).ConfigureAwait(false);
            if (stored is null)
                return null!;
            return await factory.CreateSagaConsumeContext(transaction, _context, Deserialize(stored), SagaConsumeContextMode.Load).ConfigureAwait(false);
        }

        public Task Save(SagaConsumeContext<InvocationState> context)
        {
            context.Saga.Version = 1;
            return transaction.InsertAsync(Serialize(context.Saga), CancellationToken);
        }

        public Task Update(SagaConsumeContext<InvocationState> context)
        {
            var expected = context.Saga.Version;
            context.Saga.Version = expected + 1;
            return transaction.UpdateAsync(Serialize(context.Saga), expected, CancellationToken);
        }

        public Task Delete(SagaConsumeContext<InvocationState> context) => transaction.DeleteAsync(context.Saga.CorrelationId, CancellationToken);

        public Task Discard(SagaConsumeContext<InvocationState> context) => Task.CompletedTask;

        public Task Undo(SagaConsumeContext<InvocationState> context) => Task.CompletedTask;
    }

    sealed class StandaloneContext(ISagaStoreTransaction transaction, CancellationToken cancellationToken) :
        BasePipeContext(cancellationToken), LoadSagaRepositoryContext<InvocationState>, QuerySagaRepositoryContext<InvocationState>
    {
        public async Task<InvocationState> Load(Guid correlationId)
        {
            var stored = await transaction.LoadAsync(correlationId, CancellationToken).ConfigureAwait(false);
            return stored is null ? null! : Deserialize(stored);
        }

        public Task<SagaRepositoryQueryContext<InvocationState>> Query(ISagaQuery<InvocationState> query, CancellationToken cancellationToken = default) =>
            throw new NotSupportedException("The invocation saga store does not query by expression: load by invocation id.");
    }
}
