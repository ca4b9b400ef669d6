using System.Data;
using System.Text.RegularExpressions;
using MassTransit;
using Npgsql;
using NpgsqlTypes;

namespace RunnerService.Saga.Persistence;

/// <summary>
/// The store for several replicas: one PostgreSQL table shared by all of them. Each event's transaction runs at
/// READ COMMITTED and loads its instance with <c>SELECT … FOR UPDATE</c>, so two replicas handling events for the same
/// invocation serialize on its row (the second waits, then reads the first one's committed document). Writes are
/// still version-checked, and an insert race (two "first" events for one id) is refused with
/// <see cref="ConcurrencyException"/>, which the saga endpoint's retry answers by loading the winner's instance.
/// </summary>
/// <remarks>
/// The document column is <c>json</c>, not <c>jsonb</c>: <c>jsonb</c> refuses the escape <c>\u0000</c>, which a task's
/// result or error text may well contain, and a saga that cannot be saved leaves its waiters waiting forever. Nothing
/// queries inside the document; the columns <c>state</c> and <c>owner</c> serve the recovery queries.
/// Lock waits, deadlocks and serialization failures are reported as <see cref="ConcurrencyException"/> too: the
/// transaction is gone, and a retry with a fresh one is the right answer. A lock wait is bounded only by the
/// server's <c>lock_timeout</c> (add <c>Options=-c lock_timeout=30s</c> to the connection string to bound it).
/// </remarks>
public sealed partial class PostgresSagaStore : ISagaStore, IAsyncDisposable, IDisposable
{
    /// <summary>Serializes schema creation across replicas starting at once (CREATE … IF NOT EXISTS is not race-free).</summary>
    const long SchemaLockKey = 0x52554E4E45520001; // "RUNNER" + 1

    static readonly TimeSpan PingTimeout = TimeSpan.FromSeconds(5);
    static readonly TimeSpan InitializeRetryFor = TimeSpan.FromSeconds(60);
    readonly TimeProvider _time;

    readonly NpgsqlDataSource _dataSource;
    readonly string? _schema;
    readonly string _sagas;
    readonly string _stateOwnerIndex;

    /// <param name="connectionString">An Npgsql connection string (<c>Host=…;Port=…;Database=…;Username=…;Password=…</c>).</param>
    /// <param name="schema">Optional schema for the tables (created when missing); else they go where <c>search_path</c> points (normally <c>public</c>).</param>
    /// <param name="time">The clock of the start-up retry's deadline (the table's own times are the database's <c>now()</c>).</param>
    public PostgresSagaStore(string connectionString, string? schema = null, TimeProvider? time = null)
    {
        _time = time ?? TimeProvider.System;
        if (schema is not null && !IdentifierPattern().IsMatch(schema))
            throw new ArgumentException($"'{schema}' is not a plain PostgreSQL identifier (lower-case letters, digits, _; at most 63).", nameof(schema));
        var builder = new NpgsqlConnectionStringBuilder(connectionString);
        if (string.IsNullOrEmpty(builder.ApplicationName))
            builder.ApplicationName = "RunnerService";
        _dataSource = NpgsqlDataSource.Create(builder.ConnectionString);
        _schema = schema;
        var prefix = schema is null ? "" : $"\"{schema}\".";
        _sagas = prefix + "invocation_sagas";
        _stateOwnerIndex = "ix_invocation_sagas_state_owner";
    }

    [GeneratedRegex("^[a-z_][a-z0-9_]{0,62}$")]
    private static partial Regex IdentifierPattern();

    /// <summary>The table of saga documents (schema-qualified when a schema was given).</summary>
    public string SagaTable => _sagas;

    /// <summary>
    /// Creates the schema when missing. Waits up to a minute for a server that is still starting (a replica and its
    /// database often start together); holds a transaction-scoped advisory lock so replicas starting at once do not
    /// race on CREATE TABLE.
    /// </summary>
    public async Task InitializeAsync(CancellationToken cancellationToken)
    {
        var giveUp = _time.GetUtcNow() + InitializeRetryFor;
        for (var attempt = 1; ; attempt++)
        {
            try
            {
                await CreateSchemaAsync(cancellationToken).ConfigureAwait(false);
                return;
            }
            catch (NpgsqlException e) when (e.IsTransient && _time.GetUtcNow() < giveUp && !cancellationToken.IsCancellationRequested)
            {
                await Task.Delay(TimeSpan.FromMilliseconds(Math.Min(2000, 100 * attempt)), _time, cancellationToken).ConfigureAwait(false);
            }
        }
    }

    async Task CreateSchemaAsync(CancellationToken cancellationToken)
    {
        await using var connection = await _dataSource.OpenConnectionAsync(cancellationToken).ConfigureAwait(false);
        await using var transaction = await connection.BeginTransactionAsync(IsolationLevel.ReadCommitted, cancellationToken).ConfigureAwait(false);
        var createSchema = _schema is null ? "" : $"CREATE SCHEMA IF NOT EXISTS \"{_schema}\";";
        await using (var command = new NpgsqlCommand($"""
            SELECT pg_advisory_xact_lock({SchemaLockKey});
            {createSchema}
            CREATE TABLE IF NOT EXISTS {_sagas} (
                id uuid NOT NULL PRIMARY KEY,
                state text NOT NULL,
                owner text NULL,
                version integer NOT NULL,
                updated_at timestamptz NOT NULL,
                data json NOT NULL
            );
            CREATE INDEX IF NOT EXISTS {_stateOwnerIndex} ON {_sagas} (state, owner);
            """, connection, transaction))
        {
            await command.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
        }
        await transaction.CommitAsync(cancellationToken).ConfigureAwait(false);
    }

    public async Task<ISagaStoreTransaction> BeginAsync(CancellationToken cancellationToken)
    {
        var connection = await _dataSource.OpenConnectionAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            var transaction = await connection.BeginTransactionAsync(IsolationLevel.ReadCommitted, cancellationToken).ConfigureAwait(false);
            return new Transaction(connection, transaction, _sagas);
        }
        catch
        {
            await connection.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    public async Task<StoredSaga?> ReadAsync(Guid id, CancellationToken cancellationToken)
    {
        // No FOR UPDATE, no transaction: a status query sees the last committed version and never waits for a writer.
        await using var command = _dataSource.CreateCommand($"SELECT id, state, owner, version, data::text FROM {_sagas} WHERE id = @id;");
        command.Parameters.AddWithValue("id", NpgsqlDbType.Uuid, id);
        await using var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
        return await reader.ReadAsync(cancellationToken).ConfigureAwait(false) ? Transaction.Read(reader) : null;
    }

    public async Task<bool> PingAsync(CancellationToken cancellationToken)
    {
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(PingTimeout);
        try
        {
            await using var command = _dataSource.CreateCommand($"SELECT count(*) FROM {_sagas} WHERE false;");
            await command.ExecuteScalarAsync(timeout.Token).ConfigureAwait(false);
            return true;
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            return false;
        }
        catch (Exception e) when (e is NpgsqlException or TimeoutException)
        {
            return false;
        }
    }

    public ValueTask DisposeAsync() => _dataSource.DisposeAsync();

    public void Dispose() => _dataSource.Dispose();

    /// <summary>SQLSTATEs after which the transaction is lost but a retry with a fresh one may well succeed.</summary>
    static bool IsConflict(PostgresException e) => e.SqlState is
        PostgresErrorCodes.SerializationFailure or
        PostgresErrorCodes.DeadlockDetected or
        PostgresErrorCodes.LockNotAvailable or
        PostgresErrorCodes.UniqueViolation;

    static ConcurrencyException Conflict(string message, Guid id, Exception? inner = null) =>
        inner is null
            ? new ConcurrencyException(message, typeof(InvocationState), id)
            : new ConcurrencyException(message, typeof(InvocationState), id, inner);

    sealed class Transaction(NpgsqlConnection connection, NpgsqlTransaction transaction, string table) : ISagaStoreTransaction
    {
        bool _completed;

        public async Task<StoredSaga?> LoadAsync(Guid id, CancellationToken cancellationToken)
        {
            // FOR UPDATE: a second transaction loading the same instance waits here until this one ends, then sees
            // its committed row. A missing row locks nothing; the insert below settles that race.
            await using var command = Command($"SELECT id, state, owner, version, data::text FROM {table} WHERE id = @id FOR UPDATE;");
            command.Parameters.AddWithValue("id", NpgsqlDbType.Uuid, id);
            try
            {
                await using var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
                return await reader.ReadAsync(cancellationToken).ConfigureAwait(false) ? Read(reader) : null;
            }
            catch (PostgresException e) when (IsConflict(e))
            {
                throw Conflict($"Loading the saga instance failed with {e.SqlState}: {e.MessageText}", id, e);
            }
        }

        public async Task<IReadOnlyList<StoredSaga>> LoadOwnedAsync(IReadOnlyCollection<string> states, CancellationToken cancellationToken)
        {
            await using var command = Command($"SELECT id, state, owner, version, data::text FROM {table} WHERE owner IS NOT NULL AND state = ANY(@states);");
            command.Parameters.AddWithValue("states", NpgsqlDbType.Array | NpgsqlDbType.Text, states.ToArray());
            await using var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
            var found = new List<StoredSaga>();
            while (await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
                found.Add(Read(reader));
            return found;
        }

        public async Task<IReadOnlyList<Guid>> FindUnchangedSinceAsync(IReadOnlyCollection<string> states, DateTimeOffset before, int limit, CancellationToken cancellationToken)
        {
            await using var command = Command($"SELECT id FROM {table} WHERE state = ANY(@states) AND updated_at < @before LIMIT @limit;");
            command.Parameters.AddWithValue("states", NpgsqlDbType.Array | NpgsqlDbType.Text, states.ToArray());
            command.Parameters.AddWithValue("before", before.UtcDateTime);
            command.Parameters.AddWithValue("limit", limit);
            await using var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
            var found = new List<Guid>();
            while (await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
                found.Add(reader.GetGuid(0));
            return found;
        }

        public async Task InsertAsync(StoredSaga saga, CancellationToken cancellationToken)
        {
            // A concurrent insert of the same id (not yet committed) makes this wait on the primary key; when that
            // one commits, DO NOTHING leaves 0 rows and the event is retried against the winner's instance.
            await using var command = Command($"""
                INSERT INTO {table} (id, state, owner, version, updated_at, data)
                VALUES (@id, @state, @owner, @version, now(), @data)
                ON CONFLICT (id) DO NOTHING;
                """);
            Bind(command, saga);
            int rows;
            try
            {
                rows = await command.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
            }
            catch (PostgresException e) when (IsConflict(e))
            {
                throw Conflict($"Inserting the saga instance failed with {e.SqlState}: {e.MessageText}", saga.Id, e);
            }
            if (rows == 0)
                throw Conflict("The saga instance was inserted concurrently", saga.Id);
        }

        public async Task UpdateAsync(StoredSaga saga, int expectedVersion, CancellationToken cancellationToken)
        {
            await using var command = Command($"""
                UPDATE {table} SET state = @state, owner = @owner, version = @version, updated_at = now(), data = @data
                WHERE id = @id AND version = @expected;
                """);
            Bind(command, saga);
            command.Parameters.AddWithValue("expected", NpgsqlDbType.Integer, expectedVersion);
            int rows;
            try
            {
                rows = await command.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
            }
            catch (PostgresException e) when (IsConflict(e))
            {
                throw Conflict($"Updating the saga instance failed with {e.SqlState}: {e.MessageText}", saga.Id, e);
            }
            if (rows == 0)
                throw Conflict($"The saga instance changed since version {expectedVersion} was loaded", saga.Id);
        }

        public async Task DeleteAsync(Guid id, CancellationToken cancellationToken)
        {
            await using var command = Command($"DELETE FROM {table} WHERE id = @id;");
            command.Parameters.AddWithValue("id", NpgsqlDbType.Uuid, id);
            try
            {
                await command.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
            }
            catch (PostgresException e) when (IsConflict(e))
            {
                throw Conflict($"Deleting the saga instance failed with {e.SqlState}: {e.MessageText}", id, e);
            }
        }

        public async Task CommitAsync(CancellationToken cancellationToken)
        {
            try
            {
                await transaction.CommitAsync(cancellationToken).ConfigureAwait(false);
            }
            catch (PostgresException e) when (IsConflict(e))
            {
                throw Conflict($"Committing the saga transaction failed with {e.SqlState}: {e.MessageText}", Guid.Empty, e);
            }
            finally
            {
                _completed = true;
            }
        }

        public async ValueTask DisposeAsync()
        {
            try
            {
                if (!_completed && connection.State == ConnectionState.Open)
                    await transaction.RollbackAsync(CancellationToken.None).ConfigureAwait(false);
            }
            catch (Exception e) when (e is NpgsqlException or InvalidOperationException)
            {
                // the connection broke: the server rolls the transaction back on its own
            }
            finally
            {
                await transaction.DisposeAsync().ConfigureAwait(false);
                await connection.DisposeAsync().ConfigureAwait(false);
            }
        }

        NpgsqlCommand Command(string sql) => new(sql, connection, transaction);

        static void Bind(NpgsqlCommand command, StoredSaga saga)
        {
            command.Parameters.AddWithValue("id", NpgsqlDbType.Uuid, saga.Id);
            command.Parameters.AddWithValue("state", NpgsqlDbType.Text, saga.State);
            command.Parameters.AddWithValue("owner", NpgsqlDbType.Text, (object?)saga.Owner ?? DBNull.Value);
            command.Parameters.AddWithValue("version", NpgsqlDbType.Integer, saga.Version);
            command.Parameters.AddWithValue("data", NpgsqlDbType.Json, saga.Data);
        }

        internal static StoredSaga Read(NpgsqlDataReader reader) => new(
            reader.GetGuid(0),
            reader.GetString(1),
            reader.IsDBNull(2) ? null : reader.GetString(2),
            reader.GetInt32(3),
            reader.GetString(4));
    }
}
