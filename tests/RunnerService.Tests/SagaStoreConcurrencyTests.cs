using System.Text.Json;
using MassTransit;
using MassTransit.Testing;
using Microsoft.Extensions.DependencyInjection;
using RunnerService.Saga;
using RunnerService.Saga.Messages;
using RunnerService.Saga.Persistence;

namespace RunnerService.Tests;

/// <summary>The durable SQLite saga store under concurrent events: no lost update.</summary>
[Trait("Category", "Unit")]
public sealed class SagaStoreConcurrencyTests : IDisposable
{
    readonly string _directory = Directory.CreateTempSubdirectory("saga-store-test-").FullName;

    string ConnectionString => $"Data Source={Path.Combine(_directory, "sagas.db")}";

    [Fact]
    public async Task Concurrent_events_for_one_instance_are_all_applied_through_the_state_machine()
    {
        var store = new SqliteSagaStore(ConnectionString);
        await store.InitializeAsync(CancellationToken.None);
        await using var provider = new ServiceCollection()
            .AddSingleton<ISagaStore>(store)
            .AddMassTransitTestHarness(x =>
            {
                x.AddSagaStateMachine<InvocationStateMachine, InvocationState, InvocationStateMachineDefinition>().StoreRepository();
                x.UsingInMemory((context, cfg) => cfg.ConfigureEndpoints(context));
            })
            .BuildServiceProvider(true);
        var harness = provider.GetRequiredService<ITestHarness>();
        await harness.Start();

        var target = Guid.NewGuid();
        var waiters = Enumerable.Range(0, 40).Select(_ => Guid.NewGuid()).ToArray();
        // Forty events for the same instance at once: each adds one waiter; a lost update would drop some.
        await Task.WhenAll(waiters.Select(w => harness.Bus.Publish(new RegisterWaiter { InvocationId = target, WaiterId = w, Chain = [w] })));

        var deadline = DateTime.UtcNow.AddSeconds(30);
        InvocationState? saga = null;
        while (DateTime.UtcNow < deadline)
        {
            saga = await LoadAsync(store, target);
            if (saga?.Waiters.Count == waiters.Length)
                break;
            await Task.Delay(50);
        }
        Assert.NotNull(saga);
        Assert.Equal(waiters.Order(), saga.Waiters.Order());
        Assert.Equal(waiters.Length, saga.Upstream.Count);
        Assert.Equal("Expected", saga.CurrentState);
        await harness.Stop();
    }

    [Fact]
    public async Task The_recovery_query_returns_only_owned_instances_in_the_asked_states()
    {
        var store = new SqliteSagaStore(ConnectionString);
        await store.InitializeAsync(CancellationToken.None);
        var owned = new StoredSaga(Guid.NewGuid(), "Running", "runner-a", 1, "{}");
        await using (var tx = await store.BeginAsync(CancellationToken.None))
        {
            await tx.InsertAsync(owned, CancellationToken.None);
            await tx.InsertAsync(new StoredSaga(Guid.NewGuid(), "Running", null, 1, "{}"), CancellationToken.None);
            await tx.InsertAsync(new StoredSaga(Guid.NewGuid(), "Failed", "runner-a", 1, "{}"), CancellationToken.None);
            await tx.CommitAsync(CancellationToken.None);
        }
        await using var check = await store.BeginAsync(CancellationToken.None);
        var found = await check.LoadOwnedAsync(["Running", "Waiting", "Resuming"], CancellationToken.None);
        Assert.Equal(owned, Assert.Single(found));
    }

    [Fact]
    public async Task A_stale_version_is_refused_with_a_concurrency_exception()
    {
        var store = new SqliteSagaStore(ConnectionString);
        await store.InitializeAsync(CancellationToken.None);
        var id = Guid.NewGuid();
        await using (var tx = await store.BeginAsync(CancellationToken.None))
        {
            await tx.InsertAsync(new StoredSaga(id, "Running", null, 1, "{}"), CancellationToken.None);
            await tx.CommitAsync(CancellationToken.None);
        }
        await using (var tx = await store.BeginAsync(CancellationToken.None))
        {
            await tx.UpdateAsync(new StoredSaga(id, "Waiting", null, 2, "{}"), 1, CancellationToken.None);
            await tx.CommitAsync(CancellationToken.None);
        }
        await using (var tx = await store.BeginAsync(CancellationToken.None))
        {
            await Assert.ThrowsAsync<ConcurrencyException>(() => tx.UpdateAsync(new StoredSaga(id, "Failed", null, 2, "{}"), 1, CancellationToken.None));
            await Assert.ThrowsAsync<ConcurrencyException>(() => tx.InsertAsync(new StoredSaga(id, "Failed", null, 1, "{}"), CancellationToken.None));
        }
    }

    [Fact]
    public async Task Two_stores_on_one_file_as_two_processes_would_never_lose_an_increment()
    {
        // Separate store objects have separate in-process gates: only SQLite's own write lock protects them.
        var first = new SqliteSagaStore(ConnectionString);
        var second = new SqliteSagaStore(ConnectionString);
        await first.InitializeAsync(CancellationToken.None);
        var id = Guid.NewGuid();
        await using (var tx = await first.BeginAsync(CancellationToken.None))
        {
            await tx.InsertAsync(new StoredSaga(id, "Running", null, 1, "0"), CancellationToken.None);
            await tx.CommitAsync(CancellationToken.None);
        }

        async Task IncrementAsync(SqliteSagaStore store)
        {
            for (var i = 0; i < 50; i++)
            {
                await using var tx = await store.BeginAsync(CancellationToken.None);
                var current = (await tx.LoadAsync(id, CancellationToken.None))!;
                var next = int.Parse(current.Data) + 1;
                await tx.UpdateAsync(current with { Version = current.Version + 1, Data = next.ToString() }, current.Version, CancellationToken.None);
                await tx.CommitAsync(CancellationToken.None);
            }
        }

        await Task.WhenAll(Task.Run(() => IncrementAsync(first)), Task.Run(() => IncrementAsync(second)));
        await using var check = await first.BeginAsync(CancellationToken.None);
        var final = (await check.LoadAsync(id, CancellationToken.None))!;
        Assert.Equal("100", final.Data);
        Assert.Equal(101, final.Version);
    }

    static async Task<InvocationState?> LoadAsync(ISagaStore store, Guid id)
    {
        await using var tx = await store.BeginAsync(CancellationToken.None);
        var stored = await tx.LoadAsync(id, CancellationToken.None);
        return stored is null ? null : JsonSerializer.Deserialize<InvocationState>(stored.Data, InvocationSagaRepositoryContextFactory.JsonOptions);
    }

    public void Dispose()
    {
        Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
        Directory.Delete(_directory, recursive: true);
    }
}
