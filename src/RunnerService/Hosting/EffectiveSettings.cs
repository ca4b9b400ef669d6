using Microsoft.Data.Sqlite;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Npgsql;
using RunnerService.Saga;

namespace RunnerService.Hosting;

/// <summary>
/// What this replica actually runs with, after every configuration source: logged once at start and shown in
/// <c>/status</c>. Never a password: the broker and the saga store are named by host, port and user.
/// </summary>
public sealed record EffectiveSettings
{
    /// <summary>The worker executable as it is spawned.</summary>
    public string WorkerCommand { get; init; } = "";

    /// <summary><c>stock-aot</c>, <c>stock-jit</c> (the stock worker next to the service, Native AOT or JIT build) or <c>custom</c>.</summary>
    public string WorkerKind { get; init; } = "";

    public int Slots { get; init; }

    /// <summary>The broker as <c>user@host:port/vhost</c>.</summary>
    public string Broker { get; init; } = "";

    /// <summary><c>sqlite</c> or <c>postgres</c>.</summary>
    public string SagaStore { get; init; } = "";

    /// <summary>The SQLite file, or <c>user@host:port/database</c> (and <c>schema …</c>) for PostgreSQL.</summary>
    public string SagaStoreLocation { get; init; } = "";

    /// <summary>The folder appsettings.json is read from (the service's own folder unless a content root is set).</summary>
    public string ContentRoot { get; init; } = "";

    public static EffectiveSettings From(RunnerOptions options, IConfiguration configuration, string contentRoot)
    {
        var command = options.EffectiveWorkerCommand;
        var kind = options.RunsJitStockWorker ? "stock-jit"
            : command == Path.Combine(AppContext.BaseDirectory, RunnerOptions.AotWorkerPath) ? "stock-aot"
            : "custom";
        var (store, location) = DescribeSagaStore(configuration);
        return new EffectiveSettings
        {
            WorkerCommand = command,
            WorkerKind = kind,
            Slots = options.EffectiveSlots,
            Broker = DescribeBroker(BrokerConnection.Resolve(configuration)),
            SagaStore = store,
            SagaStoreLocation = location,
            ContentRoot = contentRoot,
        };
    }

    /// <summary>
    /// <c>user@host:port/vhost</c>, or <c>user@host1:port1,host2:port2/vhost</c> for a cluster's nodes: the password
    /// never appears.
    /// </summary>
    internal static string DescribeBroker(BrokerConnection broker)
    {
        var user = broker.Primary.UserInfo.Split(':', 2)[0];
        var vhost = Uri.UnescapeDataString(broker.Primary.AbsolutePath.TrimStart('/'));
        var hosts = string.Join(',', broker.Endpoints);
        return $"{(user.Length > 0 ? Uri.UnescapeDataString(user) + "@" : "")}{hosts}/{vhost}";
    }

    public static (string Kind, string Location) DescribeSagaStore(IConfiguration configuration)
    {
        var connection = configuration.GetConnectionString(SagaStoreRegistration.ConnectionName);
        if (string.IsNullOrWhiteSpace(connection))
            connection = SagaStoreRegistration.DefaultSqliteConnection;
        if (SagaStoreRegistration.IsPostgres(connection))
        {
            try
            {
                var builder = new NpgsqlConnectionStringBuilder(connection);
                var schema = configuration[$"{RunnerOptions.SectionName}:SagaSchema"];
                var user = string.IsNullOrEmpty(builder.Username) ? "" : builder.Username + "@";
                return ("postgres", $"{user}{builder.Host}:{builder.Port}/{builder.Database}{(string.IsNullOrWhiteSpace(schema) ? "" : $" schema {schema}")}");
            }
            catch (ArgumentException)
            {
                return ("postgres", "(unreadable connection string)");
            }
        }
        try
        {
            var source = new SqliteConnectionStringBuilder(connection).DataSource;
            return ("sqlite", string.IsNullOrEmpty(source) || source == ":memory:" ? source : Path.GetFullPath(source));
        }
        catch (ArgumentException)
        {
            return ("sqlite", "(unreadable connection string)");
        }
    }
}

/// <summary>
/// Logs <see cref="EffectiveSettings"/> first thing at start, and warns when the current folder holds an
/// appsettings.json that is not read (the content root is the service's own folder; docs/operations.md).
/// </summary>
sealed partial class EffectiveSettingsLog(EffectiveSettings settings, IHostEnvironment environment, ILogger<EffectiveSettingsLog> logger) : IHostedService
{
    public Task StartAsync(CancellationToken cancellationToken)
    {
        Log.Settings(logger, settings.WorkerCommand, settings.WorkerKind, settings.Slots, settings.Broker, settings.SagaStore, settings.SagaStoreLocation);
        var current = Path.GetFullPath(Directory.GetCurrentDirectory());
        var root = Path.GetFullPath(environment.ContentRootPath);
        var ignored = Path.Combine(current, "appsettings.json");
        var read = Path.Combine(root, "appsettings.json");
        // `dotnet run` from the project folder: the file there is the one the build copied next to the service.
        if (!SameFolder(current, root) && File.Exists(ignored) && !SameContent(ignored, read))
            Log.AppSettingsNotRead(logger, ignored, read);
        else
            Log.ConfigurationFolder(logger, root);
        return Task.CompletedTask;
    }

    static bool SameContent(string a, string b)
    {
        try
        {
            return File.Exists(b) && File.ReadAllBytes(a).AsSpan().SequenceEqual(File.ReadAllBytes(b));
        }
        catch (IOException)
        {
            return false;
        }
        catch (UnauthorizedAccessException)
        {
            return false;
        }
    }

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    static bool SameFolder(string a, string b) =>
        string.Equals(Path.TrimEndingDirectorySeparator(a), Path.TrimEndingDirectorySeparator(b), StringComparison.Ordinal);

    static partial class Log
    {
        [LoggerMessage(EventId = 400, EventName = "EffectiveSettings", Level = LogLevel.Information,
            Message = "Settings: workers {WorkerCommand} ({WorkerKind}), {Slots} slots, broker {Broker}, saga store {SagaStore} {SagaStoreLocation}")]
        public static partial void Settings(ILogger logger, string workerCommand, string workerKind, int slots, string broker, string sagaStore, string sagaStoreLocation);

        [LoggerMessage(EventId = 401, EventName = "ConfigurationFolder", Level = LogLevel.Information,
            Message = "Settings: appsettings.json is read from {ContentRoot}")]
        public static partial void ConfigurationFolder(ILogger logger, string contentRoot);

        [LoggerMessage(EventId = 402, EventName = "AppSettingsNotRead", Level = LogLevel.Warning,
            Message = "Settings: {Ignored} in the current folder is NOT read; the service reads {Read} (its own folder). Move your settings there, or set them in the environment (docs/operations.md)")]
        public static partial void AppSettingsNotRead(ILogger logger, string ignored, string read);
    }
}

/// <summary>The content root: the service's own folder, unless one is given explicitly.</summary>
static class ServiceContentRoot
{
    /// <summary>
    /// <see cref="AppContext.BaseDirectory"/>, so appsettings.json next to the service is read whatever the current
    /// folder; null (the host's own choice) when <c>--contentRoot</c>, <c>DOTNET_CONTENTROOT</c> or
    /// <c>ASPNETCORE_CONTENTROOT</c> names one.
    /// </summary>
    public static string? Choose(string[] args)
    {
        if (args.Any(a => a.StartsWith("--contentRoot", StringComparison.OrdinalIgnoreCase) || a.StartsWith("/contentRoot", StringComparison.OrdinalIgnoreCase)))
            return null;
        if (!string.IsNullOrEmpty(Environment.GetEnvironmentVariable("DOTNET_CONTENTROOT"))
            || !string.IsNullOrEmpty(Environment.GetEnvironmentVariable("ASPNETCORE_CONTENTROOT")))
            return null;
        return AppContext.BaseDirectory;
    }
}
