using System.Diagnostics;

namespace RunnerService.Bench.Chaos;

/// <summary>
/// One RunnerService replica of the chaos run: a fixed instance id, HTTP port, broker URL (the broker itself, or the
/// partition proxy) and marker file, kept across its restarts, so a restart is the same replica coming back. In cluster
/// mode <paramref name="connectionString"/> lists the nodes (its first node first) and replaces the single URL.
/// </summary>
sealed class Replica(string instanceId, Uri broker, bool proxied, string markerFile, string? connectionString = null)
{
    readonly int _httpPort = ChildService.FreePort();

    public string InstanceId { get; } = instanceId;
    public Uri Broker { get; } = broker;
    public bool Proxied { get; } = proxied;
    public string MarkerFile { get; } = markerFile;
    public string? ConnectionString { get; } = connectionString;
    public ChildService? Service { get; private set; }
    public int Starts { get; private set; }
    public bool IsUp => Service is { HasExited: false };

    public async Task StartAsync(ChaosOptions options, string stateDirectory, Action<string> log)
    {
        Starts++;
        var settings = options.ServiceSettings();
        settings["Runner__InstanceId"] = InstanceId;
        settings["Runner__WorkerEnvironment__RUNNER_MARKER_FILE"] = MarkerFile;
        if (ConnectionString is not null)
            settings["ConnectionStrings__RabbitMq"] = ConnectionString;
        var watch = Stopwatch.StartNew();
        Service = await ChildService.StartRunnerAsync(new BenchOptions { ServiceDll = options.ServiceDll }, $"{InstanceId}-{Starts}", Broker,
            options.Slots, options.Worker, stateDirectory, settings, _httpPort);
        log($"{InstanceId} start #{Starts}: pid {Service.Pid}, ready after {watch.ElapsedMilliseconds} ms{(Proxied ? " (through the partition proxy)" : "")}, log {Service.LogFile}");
    }

    /// <summary>Forgets the (exited) process; <see cref="StartAsync"/> starts the next one.</summary>
    public async Task ForgetAsync()
    {
        if (Service is not null)
            await Service.DisposeAsync();
        Service = null;
    }
}
