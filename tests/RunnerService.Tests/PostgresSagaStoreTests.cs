using System.Text.Json;
using MassTransit;
using MassTransit.Testing;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Npgsql;
using RunnerService.Saga;
using RunnerService.Saga.Messages;
using RunnerService.Saga.Persistence;
using RunnerService.TestSupport;

namespace RunnerService.Tests;

/// <summary>
/// The PostgreSQL saga store against a real server (<see cref="PostgresFixture"/>: RUNNER_TEST_POSTGRES, else one it
/// starts for the run). Each test works in a schema of its own. Two store objects stand for two replicas: each has its
/// own connection pool, so only the server's locks and version checks protect them.
/// </summary>
[Collection(PostgresCollection.Name)]
[Trait("Category", "Scale")]
public sealed class PostgresSagaStoreTests(PostgresFixture postgres) : IAsyncLifetime
{
    readonly string _schema = postgres.NewSchema("saga_test");
    readonly List<PostgresSagaStore> _stores = [];
    string ConnectionString { get; set; } = "";

    PostgresSagaStore NewStore()
    {
        var store = new PostgresSagaStore(ConnectionString, _schema);
        _stores.Add(store);
        return store;
    }

    public async Task InitializeAsync() => ConnectionString = await postgres.GetConnectionStringAsync();

    public async Task DisposeAsync()
    {
        foreach (var store in _stores)
            await store.DisposeAsync();
    }

    [Fact]
    public async Task Schema_creation_is_idempotent_also_when_replicas_start_at_once()
    {
        var stores = Enumerable.Range(0, 4).Select(_ => NewStore()).ToArray();
        // Four replicas starting together: CREATE TABLE IF NOT EXISTS alone would race on the catalog.
        await Task.WhenAll(stores.Select(s => Task.Run(() => s.InitializeAsync(CancellationToken.None))));

        var id = Guid.NewGuid();
        await InsertAsync(stores[0], new StoredSaga(id, "Running", "runner-a", 1, """{"n":1}"""));

        // Again, sequentially: nothing changes, nothing is lost.
        await stores[1].InitializeAsync(CancellationToken.None);
        await stores[0].InitializeAsync(CancellationToken.None);

        Assert.Equal(new StoredSaga(id, "Running", "runner-a", 1, """{"n":1}"""), await LoadAsync(stores[1], id));
        Assert.True(await stores[2].PingAsync(CancellationToken.None));

        await using var connection = new NpgsqlConnection(ConnectionString);
        await connection.OpenAsync();
        Assert.Equal(["invocation_sagas"], await ListAsync(connection,
            "SELECT table_name FROM information_schema.tables WHERE table_schema = @schema ORDER BY table_name;"));
        var indexes = await ListAsync(connection, "SELECT indexdef FROM pg_indexes WHERE schemaname = @schema AND tablename = 'invocation_sagas';");
        Assert.Contains(indexes, d => d.Contains("(state, owner)", StringComparison.Ordinal));
        Assert.Equal(2, indexes.Count); // primary key + (state, owner): no duplicates from the repeated starts

        async Task<List<string>> ListAsync(NpgsqlConnection c, string sql)
        {
            await using var command = new NpgsqlCommand(sql, c);
            command.Parameters.AddWithValue("schema", _schema);
            await using var reader = await command.ExecuteReaderAsync();
            var rows = new List<string>();
            while (await reader.ReadAsync())
                rows.Add(reader.GetString(0));
            return rows;
        }
    }

    [Fact]
    public async Task The_recovery_query_returns_only_owned_instances_in_the_asked_states()
    {
        var store = NewStore();
        await store.InitializeAsync(CancellationToken.None);
        var owned = new StoredSaga(Guid.NewGuid(), "Waiting", "runner-a", 1, "{}");
        await InsertAsync(store, owned);
        await InsertAsync(store, new StoredSaga(Guid.NewGuid(), "Waiting", null, 1, "{}"));
        await InsertAsync(store, new StoredSaga(Guid.NewGuid(), "Succeeded", "runner-a", 1, "{}"));
        await using var tx = await store.BeginAsync(CancellationToken.None);
        var found = await tx.LoadOwnedAsync(["Running", "Waiting", "Resuming"], CancellationToken.None);
        Assert.Equal(owned, Assert.Single(found));
    }

    [Fact]
    public async Task The_retention_query_finds_only_records_in_the_asked_states_unchanged_since_the_cutoff()
    {
        var store = NewStore();
        await store.InitializeAsync(CancellationToken.None);
        var finished = new StoredSaga(Guid.NewGuid(), "Succeeded", null, 1, "{}");
        await InsertAsync(store, finished);
        await InsertAsync(store, new StoredSaga(Guid.NewGuid(), "Waiting", "runner-a", 1, "{}"));
        await using var tx = await store.BeginAsync(CancellationToken.None);
        Assert.Equal(finished.Id, Assert.Single(await tx.FindUnchangedSinceAsync(["Succeeded", "Failed"], DateTimeOffset.UtcNow.AddMinutes(1), 10, CancellationToken.None)));
        Assert.Empty(await tx.FindUnchangedSinceAsync(["Succeeded", "Failed"], DateTimeOffset.UtcNow.AddMinutes(-1), 10, CancellationToken.None));
    }

    [Fact]
    public async Task A_stale_version_is_refused_with_a_concurrency_exception()
    {
        var store = NewStore();
        await store.InitializeAsync(CancellationToken.None);
        var id = Guid.NewGuid();
        await InsertAsync(store, new StoredSaga(id, "Running", null, 1, "{}"));
        await using (var tx = await store.BeginAsync(CancellationToken.None))
        {
            await tx.UpdateAsync(new StoredSaga(id, "Waiting", "runner-a", 2, """{"v":2}"""), 1, CancellationToken.None);
            await tx.CommitAsync(CancellationToken.None);
        }
        await using (var tx = await store.BeginAsync(CancellationToken.None))
        {
            await Assert.ThrowsAsync<ConcurrencyException>(() => tx.UpdateAsync(new StoredSaga(id, "Failed", null, 2, "{}"), 1, CancellationToken.None));
        }
        await using (var tx = await store.BeginAsync(CancellationToken.None))
        {
            await Assert.ThrowsAsync<ConcurrencyException>(() => tx.InsertAsync(new StoredSaga(id, "Failed", null, 1, "{}"), CancellationToken.None));
        }
        Assert.Equal(new StoredSaga(id, "Waiting", "runner-a", 2, """{"v":2}"""), await LoadAsync(store, id));
    }

    [Fact]
    public async Task Two_replicas_racing_on_one_instance_never_lose_an_increment()
    {
        var first = NewStore();
        var second = NewStore();
        await first.InitializeAsync(CancellationToken.None);
        var id = Guid.NewGuid();
        await InsertAsync(first, new StoredSaga(id, "Running", null, 1, "0"));
        var conflicts = 0;

        // What the saga repository does for every event: load, change, update with the loaded version, commit;
        // on ConcurrencyException the endpoint's retry starts over with a fresh transaction.
        async Task IncrementAsync(PostgresSagaStore store)
        {
            for (var i = 0; i < 50; i++)
            {
                for (var attempt = 1; ; attempt++)
                {
                    try
                    {
                        await using var tx = await store.BeginAsync(CancellationToken.None);
                        var current = (await tx.LoadAsync(id, CancellationToken.None))!;
                        await Task.Yield(); // widen the window between read and write
                        var next = int.Parse(current.Data) + 1;
                        await tx.UpdateAsync(current with { Version = current.Version + 1, Data = next.ToString() }, current.Version, CancellationToken.None);
                        await tx.CommitAsync(CancellationToken.None);
                        break;
                    }
                    catch (ConcurrencyException) when (attempt < 20)
                    {
                        Interlocked.Increment(ref conflicts);
                    }
                }
            }
        }

        await Task.WhenAll(Task.Run(() => IncrementAsync(first)), Task.Run(() => IncrementAsync(second)));
        var final = (await LoadAsync(first, id))!;
        Assert.Equal("100", final.Data);
        Assert.Equal(101, final.Version);
        // SELECT … FOR UPDATE makes the second reader wait for the first one's commit, so no attempt ever read a
        // version that was stale by the time it wrote.
        Assert.Equal(0, conflicts);
    }

    [Fact]
    public async Task A_second_loader_waits_for_the_first_transaction_and_then_sees_its_write()
    {
        var first = NewStore();
        var second = NewStore();
        await first.InitializeAsync(CancellationToken.None);
        var id = Guid.NewGuid();
        await InsertAsync(first, new StoredSaga(id, "Running", null, 1, "0"));

        await using var tx1 = await first.BeginAsync(CancellationToken.None);
        var loaded1 = (await tx1.LoadAsync(id, CancellationToken.None))!;

        var secondLoad = Task.Run(async () =>
        {
            await using var tx2 = await second.BeginAsync(CancellationToken.None);
            var loaded = await tx2.LoadAsync(id, CancellationToken.None);
            await tx2.CommitAsync(CancellationToken.None);
            return loaded;
        });
        await Task.Delay(300);
        Assert.False(secondLoad.IsCompleted, "the second replica read the row while the first one held it");

        await tx1.UpdateAsync(loaded1 with { Version = 2, Data = "1" }, 1, CancellationToken.None);
        await tx1.CommitAsync(CancellationToken.None);
        var loaded2 = await secondLoad.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Equal(2, loaded2!.Version);
        Assert.Equal("1", loaded2.Data);
    }

    [Fact]
    public async Task A_lock_wait_beyond_lock_timeout_is_a_concurrency_exception_so_the_event_is_retried()
    {
        var first = NewStore();
        await first.InitializeAsync(CancellationToken.None);
        var impatient = new PostgresSagaStore(ConnectionString + ";Options=-c lock_timeout=200ms", _schema);
        _stores.Add(impatient);
        var id = Guid.NewGuid();
        await InsertAsync(first, new StoredSaga(id, "Running", null, 1, "0"));

        await using var holder = await first.BeginAsync(CancellationToken.None);
        Assert.NotNull(await holder.LoadAsync(id, CancellationToken.None));
        await using (var tx = await impatient.BeginAsync(CancellationToken.None))
        {
            var e = await Assert.ThrowsAsync<ConcurrencyException>(() => tx.LoadAsync(id, CancellationToken.None));
            Assert.Equal(PostgresErrorCodes.LockNotAvailable, Assert.IsType<PostgresException>(e.InnerException).SqlState);
        }
        await holder.CommitAsync(CancellationToken.None);
        Assert.NotNull(await LoadAsync(impatient, id)); // its pool is fine afterwards
    }

    [Fact]
    public async Task Concurrent_inserts_of_one_id_let_exactly_one_win()
    {
        var first = NewStore();
        var second = NewStore();
        await first.InitializeAsync(CancellationToken.None);
        var id = Guid.NewGuid();

        // Deterministic interleaving: both see no instance, the first inserts but has not committed yet, the second
        // inserts and waits on the key, the first commits, the second is refused.
        await using var tx1 = await first.BeginAsync(CancellationToken.None);
        await using var tx2 = await second.BeginAsync(CancellationToken.None);
        Assert.Null(await tx1.LoadAsync(id, CancellationToken.None));
        Assert.Null(await tx2.LoadAsync(id, CancellationToken.None));
        await tx1.InsertAsync(new StoredSaga(id, "Running", "runner-a", 1, """{"by":"a"}"""), CancellationToken.None);
        var secondInsert = tx2.InsertAsync(new StoredSaga(id, "Running", "runner-b", 1, """{"by":"b"}"""), CancellationToken.None);
        await Task.Delay(300);
        Assert.False(secondInsert.IsCompleted, "the second insert did not wait for the first transaction");
        await tx1.CommitAsync(CancellationToken.None);
        await Assert.ThrowsAsync<ConcurrencyException>(() => secondInsert.WaitAsync(TimeSpan.FromSeconds(10)));

        Assert.Equal(new StoredSaga(id, "Running", "runner-a", 1, """{"by":"a"}"""), await LoadAsync(second, id));
    }

    [Fact]
    public async Task Many_racing_inserts_of_one_id_have_exactly_one_winner()
    {
        var stores = new[] { NewStore(), NewStore() };
        await stores[0].InitializeAsync(CancellationToken.None);
        var id = Guid.NewGuid();
        var outcomes = await Task.WhenAll(Enumerable.Range(0, 16).Select(i => Task.Run(async () =>
        {
            try
            {
                await InsertAsync(stores[i % 2], new StoredSaga(id, "Running", $"runner-{i}", 1, $$"""{"by":{{i}}}"""));
                return true;
            }
            catch (ConcurrencyException)
            {
                return false;
            }
        })));
        Assert.Equal(1, outcomes.Count(won => won));
        var winner = Array.IndexOf(outcomes, true);
        Assert.Equal($"runner-{winner}", (await LoadAsync(stores[1], id))!.Owner);
    }

    [Fact]
    public async Task A_document_is_stored_exactly_as_given_including_a_nul_escape()
    {
        // jsonb would refuse \u0000 (and reorder keys); a task's result may contain it, and an unsavable saga would
        // leave its waiters waiting forever.
        var store = NewStore();
        await store.InitializeAsync(CancellationToken.None);
        var id = Guid.NewGuid();
        var document = """{"z":1,"a":"nul \u0000 here","nested":{"b":[1,2]}}""";
        await InsertAsync(store, new StoredSaga(id, "Completed", null, 1, document));
        Assert.Equal(document, (await LoadAsync(store, id))!.Data);
    }

    [Fact]
    public async Task Deleted_instances_are_gone_and_load_all_sees_the_rest()
    {
        var store = NewStore();
        await store.InitializeAsync(CancellationToken.None);
        var keep = Guid.NewGuid();
        var drop = Guid.NewGuid();
        await InsertAsync(store, new StoredSaga(keep, "Waiting", "runner-a", 1, "{}"));
        await InsertAsync(store, new StoredSaga(drop, "Completed", "runner-a", 1, "{}"));
        await using (var tx = await store.BeginAsync(CancellationToken.None))
        {
            await tx.DeleteAsync(drop, CancellationToken.None);
            await tx.CommitAsync(CancellationToken.None);
        }
        Assert.Null(await store.ReadAsync(drop, CancellationToken.None));
        Assert.NotNull(await store.ReadAsync(keep, CancellationToken.None));
        // A transaction disposed without commit leaves nothing behind.
        await using (var tx = await store.BeginAsync(CancellationToken.None))
            await tx.DeleteAsync(keep, CancellationToken.None);
        Assert.NotNull(await LoadAsync(store, keep));
    }

    [Fact]
    public async Task Concurrent_events_through_the_state_machine_on_two_replicas_are_all_applied()
    {
        var first = NewStore();
        var second = NewStore();
        await first.InitializeAsync(CancellationToken.None);
        await using var replicaA = await StartHarnessAsync(first);
        await using var replicaB = await StartHarnessAsync(second);
        var busA = replicaA.GetRequiredService<ITestHarness>().Bus;
        var busB = replicaB.GetRequiredService<ITestHarness>().Bus;

        var target = Guid.NewGuid();
        var waiters = Enumerable.Range(0, 40).Select(_ => Guid.NewGuid()).ToArray();
        // Forty events for one instance, split over two replicas with their own in-memory bus but one database.
        await Task.WhenAll(waiters.Select((w, i) => (i % 2 == 0 ? busA : busB).Publish(new RegisterWaiter { InvocationId = target, WaiterId = w, Chain = [w] })));

        var deadline = DateTime.UtcNow.AddSeconds(30);
        InvocationState? saga = null;
        while (DateTime.UtcNow < deadline)
        {
            var stored = await LoadAsync(first, target);
            saga = stored is null ? null : JsonSerializer.Deserialize<InvocationState>(stored.Data, InvocationSagaRepositoryContextFactory.JsonOptions);
            if (saga?.Waiters.Count == waiters.Length)
                break;
            await Task.Delay(50);
        }
        Assert.NotNull(saga);
        Assert.Equal(waiters.Order(), saga.Waiters.Order());
        Assert.Equal(waiters.Length, saga.Upstream.Count);
        Assert.Equal("Expected", saga.CurrentState);
        await replicaA.GetRequiredService<ITestHarness>().Stop();
        await replicaB.GetRequiredService<ITestHarness>().Stop();

        static async Task<ServiceProvider> StartHarnessAsync(ISagaStore store)
        {
            var provider = new ServiceCollection()
                .AddSingleton(store)
                .AddMassTransitTestHarness(x =>
                {
                    x.AddSagaStateMachine<InvocationStateMachine, InvocationState, InvocationStateMachineDefinition>().StoreRepository();
                    x.UsingInMemory((context, cfg) => cfg.ConfigureEndpoints(context));
                })
                .BuildServiceProvider(true);
            await provider.GetRequiredService<ITestHarness>().Start();
            return provider;
        }
    }

    static async Task InsertAsync(ISagaStore store, StoredSaga saga)
    {
        await using var tx = await store.BeginAsync(CancellationToken.None);
        await tx.InsertAsync(saga, CancellationToken.None);
        await tx.CommitAsync(CancellationToken.None);
    }

    static async Task<StoredSaga?> LoadAsync(ISagaStore store, Guid id)
    {
        await using var tx = await store.BeginAsync(CancellationToken.None);
        var stored = await tx.LoadAsync(id, CancellationToken.None);
        await tx.CommitAsync(CancellationToken.None);
        return stored;
    }
}

/// <summary>Which store <c>ConnectionStrings:Sagas</c> selects. Needs no server.</summary>
[Trait("Category", "Unit")]
public sealed class SagaStoreSelectionTests
{
    [Theory]
    [InlineData("Host=127.0.0.1;Port=5442;Database=runner;Username=runner;Password=runner", true)]
    [InlineData("host=db.internal;database=runner;username=runner", true)]
    [InlineData("Server=db;Database=runner;User Id=runner;Password=x", true)]
    [InlineData("Data Source=/var/lib/runner/sagas.db", false)]
    [InlineData("Data Source=sagas.db;Pooling=true", false)]
    public void An_npgsql_connection_string_selects_postgres(string connectionString, bool postgres) =>
        Assert.Equal(postgres, SagaStoreRegistration.IsPostgres(connectionString));

    [Fact]
    public async Task The_registered_store_follows_the_connection_string()
    {
        Assert.IsType<PostgresSagaStore>(await ResolveAsync("Host=127.0.0.1;Port=1;Database=runner;Username=runner;Password=x"));
        var directory = Directory.CreateTempSubdirectory("saga-select-").FullName;
        try
        {
            Assert.IsType<SqliteSagaStore>(await ResolveAsync($"Data Source={Path.Combine(directory, "sagas.db")}"));
        }
        finally
        {
            Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
            Directory.Delete(directory, recursive: true);
        }

        static async Task<ISagaStore> ResolveAsync(string connectionString)
        {
            var configuration = new ConfigurationBuilder()
                .AddInMemoryCollection(new Dictionary<string, string?> { ["ConnectionStrings:Sagas"] = connectionString })
                .Build();
            await using var provider = new ServiceCollection().AddSagaStore(configuration).BuildServiceProvider();
            return provider.GetRequiredService<ISagaStore>();
        }
    }
}
