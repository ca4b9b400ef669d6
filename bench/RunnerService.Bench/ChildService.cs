using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;

namespace RunnerService.Bench;

/// <summary>
/// A service under test started as its own OS process (RunnerService, or the naive baseline), its output going to a
/// log file (so draining it costs the bench nothing). Stopped by pid: SIGTERM, then SIGKILL.
/// </summary>
sealed class ChildService : IAsyncDisposable
{
    readonly Process _process;

    ChildService(Process process, string name, string logFile, Uri? http)
    {
        _process = process;
        Name = name;
        LogFile = logFile;
        Http = http;
    }

    public string Name { get; }
    public int Pid => _process.Id;
    public string LogFile { get; }
    public Uri? Http { get; }
    public bool HasExited => _process.HasExited;

    public static string LogDirectory { get; set; } = Path.Combine(Path.GetTempPath(), "runner-bench-logs");

    /// <summary>Starts RunnerService (dotnet RunnerService.dll) on a virtual host and waits for /health/ready.</summary>
    public static async Task<ChildService> StartRunnerAsync(BenchOptions options, string name, Uri vhost, int slots, string workerCommand,
        string stateDirectory, IReadOnlyDictionary<string, string>? extra = null, int? httpPort = null)
    {
        var port = httpPort ?? FreePort();
        var env = new Dictionary<string, string>
        {
            ["ConnectionStrings__RabbitMq"] = vhost.ToString(),
            ["ConnectionStrings__Sagas"] = $"Data Source={Path.Combine(stateDirectory, "sagas.db")}",
            ["Runner__Slots"] = slots.ToString(CultureInfo.InvariantCulture),
            ["Runner__HttpUrl"] = $"http://127.0.0.1:{port}",
            ["Runner__WorkerCommand"] = workerCommand,
            ["Runner__InstanceId"] = name,
            // Stopping a scenario should not wait out the default grace for tasks the bench left running.
            ["Runner__ShutdownGrace"] = "00:00:02",
            ["DOTNET_NOLOGO"] = "1",
        };
        foreach (var (k, v) in options.ServiceEnvironment)
            env[k] = v;
        foreach (var (k, v) in extra ?? new Dictionary<string, string>())
            env[k] = v;
        var http = new Uri($"http://127.0.0.1:{port}/");
        var child = Start(name, "dotnet", [options.ServiceDllPath], Path.GetDirectoryName(options.ServiceDllPath)!, env, http);
        await child.WaitReadyAsync(async () =>
        {
            using var client = new HttpClient { Timeout = TimeSpan.FromSeconds(5) };
            try
            {
                using var response = await client.GetAsync(new Uri(http, "health/ready"));
                return response.StatusCode == HttpStatusCode.OK;
            }
            catch (HttpRequestException)
            {
                return false;
            }
            catch (TaskCanceledException)
            {
                return false;
            }
        }, TimeSpan.FromSeconds(90));
        return child;
    }

    /// <summary>Starts the naive baseline consumer (this program in naive-consumer mode) and waits for its READY line.</summary>
    public static async Task<ChildService> StartNaiveAsync(BenchOptions options, string name, Uri vhost, int slots)
    {
        var self = Path.Combine(AppContext.BaseDirectory, "RunnerService.Bench.dll");
        var child = Start(name, "dotnet",
            [self, "naive-consumer", "--broker", vhost.ToString(), "--slots", slots.ToString(CultureInfo.InvariantCulture), "--worker-dll", options.JitWorkerDllPath],
            AppContext.BaseDirectory, new Dictionary<string, string> { ["DOTNET_NOLOGO"] = "1" }, null);
        await child.WaitReadyAsync(() => Task.FromResult(File.Exists(child.LogFile) && File.ReadAllText(child.LogFile).Contains("READY", StringComparison.Ordinal)),
            TimeSpan.FromSeconds(60));
        return child;
    }

    static ChildService Start(string name, string file, IEnumerable<string> args, string workingDirectory, IReadOnlyDictionary<string, string> env, Uri? http)
    {
        Directory.CreateDirectory(LogDirectory);
        var log = Path.Combine(LogDirectory, $"{name}.log");
        // sh execs the service with its output on a file: same pid, no pipe for the bench to drain.
        var start = new ProcessStartInfo("/bin/sh") { UseShellExecute = false, WorkingDirectory = workingDirectory };
        start.ArgumentList.Add("-c");
        start.ArgumentList.Add("exec \"$@\" >\"$BENCH_CHILD_LOG\" 2>&1 </dev/null");
        start.ArgumentList.Add("sh");
        start.ArgumentList.Add(file);
        foreach (var a in args)
            start.ArgumentList.Add(a);
        start.Environment["BENCH_CHILD_LOG"] = log;
        foreach (var (k, v) in env)
            start.Environment[k] = v;
        return new ChildService(Process.Start(start)!, name, log, http);
    }

    async Task WaitReadyAsync(Func<Task<bool>> probe, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (DateTime.UtcNow < deadline)
        {
            if (_process.HasExited)
                throw new InvalidOperationException($"{Name} exited with {_process.ExitCode} during start; log {LogFile}:\n{Tail()}");
            if (await probe())
                return;
            await Task.Delay(100);
        }
        throw new TimeoutException($"{Name} did not become ready within {timeout}; log {LogFile}:\n{Tail()}");
    }

    public string Tail(int lines = 40)
    {
        try
        {
            return string.Join('\n', File.ReadLines(LogFile).TakeLast(lines));
        }
        catch (IOException)
        {
            return "";
        }
    }

    /// <summary>Pids of this process's live children (its workers), from /proc.</summary>
    public IReadOnlyList<int> ChildPids()
    {
        var pids = new List<int>();
        try
        {
            foreach (var task in Directory.EnumerateDirectories($"/proc/{Pid}/task"))
            {
                foreach (var pid in File.ReadAllText(Path.Combine(task, "children")).Split(' ', StringSplitOptions.RemoveEmptyEntries))
                    pids.Add(int.Parse(pid, CultureInfo.InvariantCulture));
            }
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }
        return pids;
    }

    /// <summary>SIGTERM, up to <paramref name="grace"/> for a clean exit, then SIGKILL.</summary>
    public async Task StopAsync(TimeSpan grace)
    {
        if (_process.HasExited)
            return;
        ProcStats.Signal(_process.Id, ProcStats.SIGTERM);
        using var cts = new CancellationTokenSource(grace);
        try
        {
            await _process.WaitForExitAsync(cts.Token);
        }
        catch (OperationCanceledException)
        {
            ProcStats.Signal(_process.Id, ProcStats.SIGKILL);
            await _process.WaitForExitAsync();
        }
    }

    public async Task KillAsync()
    {
        if (_process.HasExited)
            return;
        ProcStats.Signal(_process.Id, ProcStats.SIGKILL);
        await _process.WaitForExitAsync();
    }

    public async ValueTask DisposeAsync()
    {
        await StopAsync(TimeSpan.FromSeconds(15));
        _process.Dispose();
    }

    public static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }
}
