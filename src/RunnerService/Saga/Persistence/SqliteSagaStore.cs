using System.Globalization;
using MassTransit;
using Microsoft.Data.Sqlite;

namespace RunnerService.Saga.Persistence;

/// <summary>
/// The single-node default: a SQLite file. Every event's transaction starts with BEGIN IMMEDIATE, which takes the
/// database's write lock first, so two events for one invocation can never interleave their read and write — in this
/// process (a gate avoids spinning on the lock) or in another process sharing the file.
/// </summary>
public sealed class SqliteSagaStore : ISagaStore, IDisposable
{
    readonly string _connectionString;
    readonly string _pingConnectionString;
    readonly SemaphoreSlim _gate = new(1, 1);
    readonly string? _file;
    readonly TimeProvider _time;

    /// <param name="time">The clock that stamps <c>updated_at</c> (retention's cut-off reads the same clock).</param>
    public SqliteSagaStore(string connectionString, TimeProvider? time = null)
    {
        _time = time ?? TimeProvider.System;
        var builder = new SqliteConnectionStringBuilder(connectionString) { Pooling = true, DefaultTimeout = 30 };
        if (!string.IsNullOrEmpty(builder.DataSource) && builder.DataSource != ":memory:")
        {
            var directory = Path.GetDirectoryName(Path.GetFullPath(builder.DataSource));
            if (directory is not null)
                Directory.CreateDirectory(directory);
            _file = Path.GetFullPath(builder.DataSource);
        }
        _connectionString = builder.ToString();
        // The readiness ping opens the file afresh, never a pooled connection: a pooled one still reads a file that
        // was deleted or moved away (or whose folder was unmounted), and would answer for a store that is gone.
        _pingConnectionString = new SqliteConnectionStringBuilder(_connectionString)
        {
            Pooling = false,
            Mode = builder.Mode == SqliteOpenMode.ReadWriteCreate ? SqliteOpenMode.ReadWrite : builder.Mode,
            DefaultTimeout = 5,
        }.ToString();
    }

    public async Task InitializeAsync(CancellationToken cancellationToken)
    {
        await using var connection = await OpenAsync(cancellationToken).ConfigureAwait(false);
        await ExecuteAsync(connection, """
            PRAGMA journal_mode = WAL;
            CREATE TABLE IF NOT EXISTS invocation_sagas (
                id TEXT NOT NULL PRIMARY KEY,
                state TEXT NOT NULL,
                owner TEXT NULL,
                version INTEGER NOT NULL,
                updated_at TEXT NOT NULL,
                data TEXT NOT NULL
            );
            CREATE INDEX IF NOT EXISTS ix_invocation_sagas_state_owner ON invocation_sagas (state, owner);
            """, cancellationToken).ConfigureAwait(false);
        // The store is the service's alone: workers (another user with Runner:WorkerUser) must not read or write it.
        // SQLite gives its -wal and -shm files the same permissions as the database file.
        if (_file is not null && !OperatingSystem.IsWindows())
        {
            foreach (var file in new[] { _file, _file + "-wal", _file + "-shm" }.Where(File.Exists))
                File.SetUnixFileMode(file, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        }
    }

    public async Task<ISagaStoreTransaction> BeginAsync(CancellationToken cancellationToken)
    {
        await _gate.WaitAsync(cancellationToken).ConfigureAwait(false);
        SqliteConnection? connection = null;
        try
        {
            connection = await OpenAsync(cancellationToken).ConfigureAwait(false);
            await ExecuteAsync(connection, "BEGIN IMMEDIATE;", cancellationToken).ConfigureAwait(false);
            return new Transaction(connection, _gate, _time);
        }
        catch
        {
            if (connection is not null)
                await connection.DisposeAsync().ConfigureAwait(false);
            _gate.Release();
            throw;
        }
    }

    public async Task<StoredSaga?> ReadAsync(Guid id, CancellationToken cancellationToken)
    {
        // No BEGIN IMMEDIATE and no gate: a reader in WAL mode sees the last committed version without the write lock.
        await using var connection = await OpenAsync(cancellationToken).ConfigureAwait(false);
        await using var command = connection.CreateCommand();
        command.CommandText = "SELECT id, state, owner, version, data FROM invocation_sagas WHERE id = $id;";
        command.Parameters.AddWithValue("$id", id.ToString());
        await using var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
        return await reader.ReadAsync(cancellationToken).ConfigureAwait(false) ? Transaction.Read(reader) : null;
    }

    public async Task<bool> PingAsync(CancellationToken cancellationToken)
    {
        try
        {
            if (_file is null)
            {
                // In memory: only the pooled connection sees the database.
                await using var pooled = await OpenAsync(cancellationToken).ConfigureAwait(false);
                await ExecuteAsync(pooled, "SELECT 1;", cancellationToken).ConfigureAwait(false);
                return true;
            }
            await using var connection = new SqliteConnection(_pingConnectionString);
            await connection.OpenAsync(cancellationToken).ConfigureAwait(false);
            await ExecuteAsync(connection, "SELECT count(*) FROM invocation_sagas WHERE 0;", cancellationToken).ConfigureAwait(false);
            return true;
        }
        catch (SqliteException)
        {
            return false;
        }
    }

    async Task<SqliteConnection> OpenAsync(CancellationToken cancellationToken)
    {
        var connection = new SqliteConnection(_connectionString);
        await connection.OpenAsync(cancellationToken).ConfigureAwait(false);
        await ExecuteAsync(connection, "PRAGMA busy_timeout = 30000; PRAGMA synchronous = NORMAL;", cancellationToken).ConfigureAwait(false);
        return connection;
    }

    static async Task ExecuteAsync(SqliteConnection connection, string sql, CancellationToken cancellationToken)
    {
        await using var command = connection.CreateCommand();
        command.CommandText = sql;
        await command.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
    }

    public void Dispose() => _gate.Dispose();

    sealed class Transaction(SqliteConnection connection, SemaphoreSlim gate, TimeProvider time) : ISagaStoreTransaction
    {
        bool _committed;

        public async Task<StoredSaga?> LoadAsync(Guid id, CancellationToken cancellationToken)
        {
            await using var command = connection.CreateCommand();
            command.CommandText = "SELECT id, state, owner, version, data FROM invocation_sagas WHERE id = $id;";
            command.Parameters.AddWithValue("$id", id.ToString());
            await using var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
            return await reader.ReadAsync(cancellationToken).ConfigureAwait(false) ? Read(reader) : null;
        }

        public async Task<IReadOnlyList<StoredSaga>> LoadOwnedAsync(IReadOnlyCollection<string> states, CancellationToken cancellationToken)
        {
            await using var command = connection.CreateCommand();
            var names = states.Select((state, i) => (Name: $"$s{i}", State: state)).ToArray();
            command.CommandText = $"SELECT id, state, owner, version, data FROM invocation_sagas WHERE owner IS NOT NULL AND state IN ({string.Join(", ", names.Select(n => n.Name))});";
            foreach (var (name, state) in names)
                command.Parameters.AddWithValue(name, state);
            await using var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
            var found = new List<StoredSaga>();
            while (await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
                found.Add(Read(reader));
            return found;
        }

        public async Task<IReadOnlyList<Guid>> FindUnchangedSinceAsync(IReadOnlyCollection<string> states, DateTimeOffset before, int limit, CancellationToken cancellationToken)
        {
            await using var command = connection.CreateCommand();
            var names = states.Select((state, i) => (Name: $"$s{i}", State: state)).ToArray();
            // updated_at is ISO 8601 in UTC ("O"): text order is time order.
            command.CommandText = $"SELECT id FROM invocation_sagas WHERE state IN ({string.Join(", ", names.Select(n => n.Name))}) AND updated_at < $before LIMIT $limit;";
            foreach (var (name, state) in names)
                command.Parameters.AddWithValue(name, state);
            command.Parameters.AddWithValue("$before", before.ToUniversalTime().ToString("O", CultureInfo.InvariantCulture));
            command.Parameters.AddWithValue("$limit", limit);
            await using var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
            var found = new List<Guid>();
            while (await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
                found.Add(Guid.Parse(reader.GetString(0)));
            return found;
        }

        public async Task InsertAsync(StoredSaga saga, CancellationToken cancellationToken)
        {
            await using var command = connection.CreateCommand();
            command.CommandText = """
                INSERT INTO invocation_sagas (id, state, owner, version, updated_at, data)
                VALUES ($id, $state, $owner, $version, $updated, $data)
                ON CONFLICT (id) DO NOTHING;
                """;
            Bind(command, saga);
            if (await command.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false) == 0)
                throw new ConcurrencyException("The saga instance was inserted concurrently", typeof(InvocationState), saga.Id);
        }

        public async Task UpdateAsync(StoredSaga saga, int expectedVersion, CancellationToken cancellationToken)
        {
            await using var command = connection.CreateCommand();
            command.CommandText = """
                UPDATE invocation_sagas SET state = $state, owner = $owner, version = $version, updated_at = $updated, data = $data
                WHERE id = $id AND version = $expected;
                """;
            Bind(command, saga);
            command.Parameters.AddWithValue("$expected", expectedVersion);
            if (await command.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false) == 0)
                throw new ConcurrencyException($"The saga instance changed since version {expectedVersion} was loaded", typeof(InvocationState), saga.Id);
        }

        public async Task DeleteAsync(Guid id, CancellationToken cancellationToken)
        {
            await using var command = connection.CreateCommand();
            command.CommandText = "DELETE FROM invocation_sagas WHERE id = $id;";
            command.Parameters.AddWithValue("$id", id.ToString());
            await command.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
        }

        public async Task CommitAsync(CancellationToken cancellationToken)
        {
            await ExecuteAsync(connection, "COMMIT;", cancellationToken).ConfigureAwait(false);
            _committed = true;
        }

        public async ValueTask DisposeAsync()
        {
            try
            {
                if (!_committed)
                    await ExecuteAsync(connection, "ROLLBACK;", CancellationToken.None).ConfigureAwait(false);
            }
            catch (SqliteException)
            {
                // the transaction is gone with the connection anyway
            }
            finally
            {
                await connection.DisposeAsync().ConfigureAwait(false);
                gate.Release();
            }
        }

        void Bind(SqliteCommand command, StoredSaga saga)
        {
            command.Parameters.AddWithValue("$id", saga.Id.ToString());
            command.Parameters.AddWithValue("$state", saga.State);
            command.Parameters.AddWithValue("$owner", (object?)saga.Owner ?? DBNull.Value);
            command.Parameters.AddWithValue("$version", saga.Version);
            command.Parameters.AddWithValue("$updated", time.GetUtcNow().ToString("O", CultureInfo.InvariantCulture));
            command.Parameters.AddWithValue("$data", saga.Data);
        }

        internal static StoredSaga Read(SqliteDataReader reader) => new(
            Guid.Parse(reader.GetString(0)),
            reader.GetString(1),
            reader.IsDBNull(2) ? null : reader.GetString(2),
            reader.GetInt32(3),
            reader.GetString(4));
    }
}
