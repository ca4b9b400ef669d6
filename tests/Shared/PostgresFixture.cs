using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using Npgsql;
using Testcontainers.PostgreSql;
using Xunit.Abstractions;
using Xunit.Sdk;

namespace RunnerService.TestSupport;

/// <summary>
/// One real PostgreSQL server per test run, found in this order: <c>RUNNER_TEST_POSTGRES</c> (an Npgsql connection
/// string, as deploy/local/run-tests.sh sets it); a Testcontainers container when a Docker engine answers; else a
/// private cluster started here with deploy/local/postgres.sh and stopped at the end. The server is started on first
/// use, so a run whose tests never ask for it starts nothing. Tests isolate themselves with a schema each
/// (<see cref="NewSchema"/>). Compiled into both test projects (tests/Shared).
/// </summary>
public sealed class PostgresFixture(IMessageSink diagnostics) : IAsyncLifetime
{
    public const string EnvironmentVariable = "RUNNER_TEST_POSTGRES";

    // Ports tried in turn, away from postgres.sh's default (5442), run-tests.sh's (5452) and PostgreSQL's (5432).
    // Each run holds a lock on its port for as long as it lives: the unit and the integration tests run at the same
    // time under `dotnet test RunnerService.sln`, and other checkouts on the machine may run theirs.
    const int FirstLocalPort = 5482;
    const int LocalPortCount = 10;

    readonly ConcurrentQueue<string> _schemas = new();
    readonly object _startLock = new();
    Task<string>? _start;
    PostgreSqlContainer? _container;
    LocalCluster? _local;

    /// <summary>Where the server came from: the environment variable, Testcontainers or deploy/local/postgres.sh.</summary>
    public string Source { get; private set; } = "";

    /// <summary>The server's connection string; starts the server on the first call.</summary>
    public Task<string> GetConnectionStringAsync()
    {
        lock (_startLock)
            return _start ??= Task.Run(StartAsync);
    }

    /// <summary>
    /// A fresh schema name for one test (for <c>Runner:SagaSchema</c> or a store of its own), created by whoever uses
    /// it first. On a server that outlives the run (<c>RUNNER_TEST_POSTGRES</c>) the schemas are dropped at the end.
    /// </summary>
    public string NewSchema(string label)
    {
        var schema = $"{label[..Math.Min(label.Length, 30)]}_{Guid.NewGuid():N}".ToLowerInvariant();
        _schemas.Enqueue(schema);
        return schema;
    }

    public Task InitializeAsync() => Task.CompletedTask;

    async Task<string> StartAsync()
    {
        string connectionString;
        if (Environment.GetEnvironmentVariable(EnvironmentVariable) is { Length: > 0 } configured)
        {
            connectionString = configured;
            Source = EnvironmentVariable;
        }
        else if (await TryStartContainerAsync() is { } container)
        {
            connectionString = container;
            Source = "Testcontainers";
        }
        else
        {
            connectionString = await StartLocalClusterAsync();
            Source = "deploy/local/postgres.sh";
        }
        diagnostics.OnMessage(new DiagnosticMessage($"PostgreSQL for the tests from {Source}"));
        return connectionString;
    }

    async Task<string?> TryStartContainerAsync()
    {
        try
        {
            _container = new PostgreSqlBuilder("postgres:15").Build();
            await _container.StartAsync();
            return _container.GetConnectionString();
        }
        catch (Exception ex) when (ex.GetType().Name.Contains("Docker", StringComparison.Ordinal) || ex is InvalidOperationException or ArgumentException or HttpRequestException)
        {
            _container = null;
            return null;
        }
    }

    async Task<string> StartLocalClusterAsync()
    {
        for (var port = FirstLocalPort; port < FirstLocalPort + LocalPortCount; port++)
        {
            if (LocalCluster.TryClaim(port) is not { } cluster)
                continue; // another test run holds this port
            // A cluster left behind by a run that was killed: stop it and start from empty state.
            await cluster.RunScriptAsync("stop");
            cluster.DeleteState();
            if (!IsFree(port))
            {
                cluster.Release();
                continue;
            }
            _local = cluster; // from here on DisposeAsync stops it, even if the start fails half-way
            var (exitCode, output) = await cluster.RunScriptAsync("start");
            if (exitCode != 0)
                throw new InvalidOperationException($"deploy/local/postgres.sh start failed ({exitCode}):\n{output}");
            const string prefix = "export " + EnvironmentVariable + "=";
            var line = output.Split('\n').FirstOrDefault(l => l.StartsWith(prefix, StringComparison.Ordinal))
                ?? throw new InvalidOperationException($"deploy/local/postgres.sh start printed no {EnvironmentVariable}:\n{output}");
            return line[prefix.Length..].Trim().Trim('\'');
        }
        throw new InvalidOperationException(
            $"No free port for a private PostgreSQL in {FirstLocalPort}-{FirstLocalPort + LocalPortCount - 1}; set {EnvironmentVariable} to use a running server.");
    }

    static bool IsFree(int port)
    {
        try
        {
            var listener = new TcpListener(IPAddress.Loopback, port);
            listener.Start();
            listener.Stop();
            return true;
        }
        catch (SocketException)
        {
            return false;
        }
    }

    public async Task DisposeAsync()
    {
        try
        {
            if (_start is not null && await _start is var connectionString && Source == EnvironmentVariable)
                await DropSchemasAsync(connectionString);
        }
        catch (Exception ex) when (ex is InvalidOperationException or NpgsqlException)
        {
            // the start failed (every test that asked has seen why) or the server has gone
        }
        finally
        {
            await StopAsync();
        }
    }

    async Task StopAsync()
    {
        if (_container is not null)
            await _container.DisposeAsync();
        if (_local is not null)
        {
            var (exitCode, output) = await _local.RunScriptAsync("stop");
            try
            {
                // A cluster left running fails the run (the next run on this port stops and wipes it).
                if (exitCode != 0)
                    throw new InvalidOperationException($"deploy/local/postgres.sh stop failed ({exitCode}):\n{output}");
                _local.DeleteState();
            }
            finally
            {
                _local.Release(); // only now may another run take the port and the folder
            }
        }
    }

    async Task DropSchemasAsync(string connectionString)
    {
        if (_schemas.IsEmpty)
            return;
        await using var connection = new NpgsqlConnection(connectionString);
        await connection.OpenAsync();
        foreach (var schema in _schemas)
        {
            await using var command = new NpgsqlCommand($"DROP SCHEMA IF EXISTS \"{schema}\" CASCADE;", connection);
            await command.ExecuteNonQueryAsync();
        }
    }

    /// <summary>A cluster of deploy/local/postgres.sh in a state folder of its own, on a port this run has claimed.</summary>
    sealed class LocalCluster
    {
        readonly FileStream _claim;
        readonly string _directory;
        readonly int _port;

        LocalCluster(FileStream claim, string directory, int port) => (_claim, _directory, _port) = (claim, directory, port);

        /// <summary>The port, or null when another live process holds it (FileShare.None takes an flock on Linux).</summary>
        public static LocalCluster? TryClaim(int port)
        {
            var directory = $"/tmp/runnerservice-fixture-postgres-{port}";
            try
            {
                var claim = new FileStream(directory + ".lock", FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None);
                return new LocalCluster(claim, directory, port);
            }
            catch (IOException)
            {
                return null;
            }
        }

        public void Release() => _claim.Dispose();

        public void DeleteState()
        {
            if (Directory.Exists(_directory))
                Directory.Delete(_directory, recursive: true);
        }

        public async Task<(int ExitCode, string Output)> RunScriptAsync(string verb)
        {
            var start = new ProcessStartInfo("bash") { RedirectStandardOutput = true, RedirectStandardError = true };
            start.ArgumentList.Add(Path.Combine(FindRepositoryRoot(), "deploy", "local", "postgres.sh"));
            start.ArgumentList.Add(verb);
            start.Environment["RUNNER_PG_DIR"] = _directory;
            start.Environment["RUNNER_PG_PORT"] = _port.ToString(CultureInfo.InvariantCulture);
            using var process = Process.Start(start)!;
            var stdout = process.StandardOutput.ReadToEndAsync();
            var stderr = process.StandardError.ReadToEndAsync();
            await process.WaitForExitAsync();
            return (process.ExitCode, await stdout + await stderr);
        }

        static string FindRepositoryRoot()
        {
            for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            {
                if (File.Exists(Path.Combine(dir.FullName, "RunnerService.sln")))
                    return dir.FullName;
            }
            throw new InvalidOperationException($"RunnerService.sln not found above {AppContext.BaseDirectory}");
        }
    }
}
