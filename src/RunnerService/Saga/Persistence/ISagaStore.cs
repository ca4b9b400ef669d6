namespace RunnerService.Saga.Persistence;

/// <summary>
/// Durable storage of saga instances as JSON documents with a version per instance.
/// One <see cref="ISagaStoreTransaction"/> covers the handling of one event.
/// </summary>
public interface ISagaStore
{
    /// <summary>Creates the schema when missing. Called once at start.</summary>
    Task InitializeAsync(CancellationToken cancellationToken);

    Task<ISagaStoreTransaction> BeginAsync(CancellationToken cancellationToken);

    /// <summary>
    /// Reads one instance without a transaction or a lock (a status query): it never waits for a writer and never
    /// writes. Null when there is none.
    /// </summary>
    Task<StoredSaga?> ReadAsync(Guid id, CancellationToken cancellationToken);

    /// <summary>Checks the store answers (readiness).</summary>
    Task<bool> PingAsync(CancellationToken cancellationToken);
}

public interface ISagaStoreTransaction : IAsyncDisposable
{
    /// <summary>The stored document and its version, or null.</summary>
    Task<StoredSaga?> LoadAsync(Guid id, CancellationToken cancellationToken);

    /// <summary>Inserts a new instance; throws <see cref="MassTransit.ConcurrencyException"/> if it exists already.</summary>
    Task InsertAsync(StoredSaga saga, CancellationToken cancellationToken);

    /// <summary>Replaces the instance if its stored version is still <paramref name="expectedVersion"/>; else throws <see cref="MassTransit.ConcurrencyException"/>.</summary>
    Task UpdateAsync(StoredSaga saga, int expectedVersion, CancellationToken cancellationToken);

    Task DeleteAsync(Guid id, CancellationToken cancellationToken);

    /// <summary>Instances in one of <paramref name="states"/> that have an owner (the recovery check; uses the (state, owner) index).</summary>
    Task<IReadOnlyList<StoredSaga>> LoadOwnedAsync(IReadOnlyCollection<string> states, CancellationToken cancellationToken);

    /// <summary>Ids of instances in one of <paramref name="states"/> last changed before <paramref name="before"/>, at most <paramref name="limit"/> (retention).</summary>
    Task<IReadOnlyList<Guid>> FindUnchangedSinceAsync(IReadOnlyCollection<string> states, DateTimeOffset before, int limit, CancellationToken cancellationToken);

    Task CommitAsync(CancellationToken cancellationToken);
}

/// <summary>One stored instance: its document plus the columns queries need.</summary>
public sealed record StoredSaga(Guid Id, string State, string? Owner, int Version, string Data);

public static class SagaStoreReads
{
    /// <summary>One invocation's saga state, read without a transaction or a lock (<see cref="ISagaStore.ReadAsync"/>); null when there is none.</summary>
    public static async Task<InvocationState?> ReadStateAsync(this ISagaStore store, Guid id, CancellationToken cancellationToken) =>
        await store.ReadAsync(id, cancellationToken).ConfigureAwait(false) is { } stored ? InvocationSagaRepositoryContextFactory.Deserialize(stored) : null;
}
