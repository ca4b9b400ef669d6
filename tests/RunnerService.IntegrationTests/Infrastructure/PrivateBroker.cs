using System.Diagnostics;

namespace RunnerService.IntegrationTests.Infrastructure;

/// <summary>
/// A second broker of a test's own, started with deploy/local/rabbitmq.sh on its own ports and folder: for tests that
/// stop the broker or need a special broker setting (a short consumer timeout), without disturbing the shared one.
/// </summary>
public sealed class PrivateBroker : IAsyncDisposable
{
    readonly Dictionary<string, string> _environment;

    PrivateBroker(int basePort, int? consumerTimeoutMs)
    {
        _environment = new()
        {
            ["RUNNER_BROKER_DIR"] = $"/tmp/runnerservice-private-broker-{basePort}",
            ["RUNNER_BROKER_PORT"] = basePort.ToString(System.Globalization.CultureInfo.InvariantCulture),
            ["RUNNER_BROKER_MGMT_PORT"] = (basePort + 10000).ToString(System.Globalization.CultureInfo.InvariantCulture),
            ["RUNNER_BROKER_DIST_PORT"] = (basePort + 20000).ToString(System.Globalization.CultureInfo.InvariantCulture),
            ["RUNNER_BROKER_EPMD_PORT"] = (basePort - 1300).ToString(System.Globalization.CultureInfo.InvariantCulture),
            ["RUNNER_BROKER_PROMETHEUS_PORT"] = (basePort + 11000).ToString(System.Globalization.CultureInfo.InvariantCulture),
        };
        if (consumerTimeoutMs is { } timeout)
            _environment["RUNNER_BROKER_CONSUMER_TIMEOUT_MS"] = timeout.ToString(System.Globalization.CultureInfo.InvariantCulture);
        AmqpUri = new Uri($"amqp://guest:guest@127.0.0.1:{basePort}/");
        ManagementUri = new Uri($"http://guest:guest@127.0.0.1:{basePort + 10000}/");
    }

    public Uri AmqpUri { get; }

    public Uri ManagementUri { get; }

    /// <summary>The RUNNER_BROKER_* settings of deploy/local/rabbitmq.sh for this broker (to stop and start it from elsewhere).</summary>
    public IReadOnlyDictionary<string, string> ScriptEnvironment => _environment;

    public static async Task<PrivateBroker> StartAsync(int basePort, int? consumerTimeoutMs = null)
    {
        var broker = new PrivateBroker(basePort, consumerTimeoutMs);
        await broker.RunAsync("stop");
        if (Directory.Exists(broker._environment["RUNNER_BROKER_DIR"]))
            Directory.Delete(broker._environment["RUNNER_BROKER_DIR"], recursive: true);
        await broker.StartAgainAsync();
        return broker;
    }

    public Task StartAgainAsync() => RunAsync("start");

    public Task StopAsync() => RunAsync("stop");

    async Task RunAsync(string verb)
    {
        Directory.CreateDirectory(_environment["RUNNER_BROKER_DIR"]);
        var start = new ProcessStartInfo("bash") { RedirectStandardOutput = true, RedirectStandardError = true };
        start.ArgumentList.Add(Path.Combine(RepoPaths.Root, "deploy", "local", "rabbitmq.sh"));
        start.ArgumentList.Add(verb);
        foreach (var (key, value) in _environment)
            start.Environment[key] = value;
        using var process = Process.Start(start)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        await process.WaitForExitAsync();
        if (process.ExitCode != 0)
            throw new InvalidOperationException($"rabbitmq.sh {verb} failed ({process.ExitCode}):\n{await stdout}\n{await stderr}");
    }

    public async ValueTask DisposeAsync()
    {
        await RunAsync("stop");
        try
        {
            Directory.Delete(_environment["RUNNER_BROKER_DIR"], recursive: true);
        }
        catch (IOException)
        {
        }
    }
}
