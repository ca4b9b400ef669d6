using System.Diagnostics;

namespace RunnerService.Bench;

/// <summary>One scenario's world: a fresh virtual host, the service under test on it, the bench bus, a state folder.</summary>
sealed class ScenarioEnvironment : IAsyncDisposable
{
    readonly BrokerAdmin _admin;

    ScenarioEnvironment(BrokerAdmin admin, string vhostName, Uri vhost, string stateDirectory)
    {
        _admin = admin;
        VirtualHostName = vhostName;
        VirtualHost = vhost;
        StateDirectory = stateDirectory;
    }

    public string VirtualHostName { get; }
    public Uri VirtualHost { get; }
    public string StateDirectory { get; }
    public ChildService Service { get; private set; } = null!;
    public BenchBus Bus { get; private set; } = null!;

    /// <summary>How to stop the service when the scenario ends (SIGKILL when it holds many paused workers).</summary>
    public bool KillOnDispose { get; set; }

    public static async Task<ScenarioEnvironment> StartAsync(BrokerAdmin admin, string scenario, BenchBus.Events events,
        Func<Uri, string, string, Task<ChildService>> startService)
    {
        var stamp = DateTime.UtcNow.ToString("HHmmssfff", System.Globalization.CultureInfo.InvariantCulture);
        var name = $"bench-{scenario}-{stamp}";
        var vhost = await admin.CreateVirtualHostAsync(name);
        var state = Directory.CreateTempSubdirectory($"runner-bench-{scenario}-").FullName;
        var env = new ScenarioEnvironment(admin, name, vhost, state);
        try
        {
            // The bench's bus first: its client queue exists before the service publishes anything.
            env.Bus = await BenchBus.StartAsync(vhost, events);
            env.Service = await startService(vhost, name, state);
        }
        catch
        {
            await env.DisposeAsync();
            throw;
        }
        return env;
    }

    bool _disposed;

    public async ValueTask DisposeAsync()
    {
        if (_disposed)
            return;
        _disposed = true;
        if (Service is not null)
        {
            if (KillOnDispose)
                await Service.KillAsync();
            await Service.DisposeAsync();
        }
        if (Bus is not null)
        {
            try
            {
                await Bus.DisposeAsync();
            }
            catch (Exception ex) when (ex is OperationCanceledException or TimeoutException)
            {
            }
        }
        await _admin.DeleteVirtualHostAsync(VirtualHostName);
        try
        {
            Directory.Delete(StateDirectory, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}

/// <summary>CPU used by each party over a stretch of a run.</summary>
sealed class CpuSnapshot
{
    public ProcStats.ProcessCpu Service { get; init; }
    public ProcStats.ProcessCpu Broker { get; init; }
    public double BenchMs { get; init; }
    public ProcStats.MachineCpu Machine { get; init; }
    public long Timestamp { get; init; }

    public static CpuSnapshot Take(int servicePid, int? brokerPid) => new()
    {
        Service = ProcStats.Cpu(servicePid),
        Broker = brokerPid is { } b ? ProcStats.Cpu(b) : default,
        BenchMs = Process.GetCurrentProcess().TotalProcessorTime.TotalMilliseconds,
        Machine = ProcStats.Machine(),
        Timestamp = Stopwatch.GetTimestamp(),
    };

    /// <summary>CPU milliseconds per invocation by party, and the machine's busy share, between two snapshots.</summary>
    public static Dictionary<string, object?> PerInvocation(CpuSnapshot a, CpuSnapshot b, int invocations)
    {
        var service = b.Service - a.Service;
        var broker = b.Broker - a.Broker;
        var bench = b.BenchMs - a.BenchMs;
        var machine = b.Machine - a.Machine;
        var wallMs = Stopwatch.GetElapsedTime(a.Timestamp, b.Timestamp).TotalMilliseconds;
        var known = service.SelfMs + service.ChildrenMs + broker.SelfMs + bench;
        double Per(double ms) => Math.Round(ms / invocations, 3);
        return new Dictionary<string, object?>
        {
            ["wall_ms"] = Math.Round(wallMs, 1),
            ["cpu_ms_per_invocation_service"] = Per(service.SelfMs),
            ["cpu_ms_per_invocation_workers"] = Per(service.ChildrenMs),
            ["cpu_ms_per_invocation_broker"] = Per(broker.SelfMs),
            ["cpu_ms_per_invocation_bench_client"] = Per(bench),
            ["cpu_ms_per_invocation_rest_of_machine"] = Per(Math.Max(0, machine.BusyMs - known)),
            ["machine_busy_fraction"] = machine.TotalMs > 0 ? Math.Round(machine.BusyMs / machine.TotalMs, 3) : null,
            ["machine_steal_fraction"] = machine.TotalMs > 0 ? Math.Round(machine.StealMs / machine.TotalMs, 4) : null,
        };
    }
}
