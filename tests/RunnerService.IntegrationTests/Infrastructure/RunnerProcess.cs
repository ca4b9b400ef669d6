using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net;
using System.Net.Http.Json;
using System.Net.Sockets;
using Xunit.Abstractions;

namespace RunnerService.IntegrationTests.Infrastructure;

/// <summary>
/// A RunnerService replica started as its own OS process (<c>dotnet RunnerService.dll</c>), the way it runs in
/// production. Killed by pid when the test ends; its output goes to the test's output.
/// </summary>
public sealed class RunnerProcess : IAsyncDisposable
{
    readonly Process _process;
    readonly ConcurrentQueue<string> _output = new();
    readonly ITestOutputHelper? _testOutput;
    readonly HttpClient _http;

    RunnerProcess(Process process, Uri httpBase, ITestOutputHelper? testOutput)
    {
        _process = process;
        _testOutput = testOutput;
        HttpBase = httpBase;
        _http = new HttpClient { BaseAddress = httpBase, Timeout = TimeSpan.FromSeconds(10) };
        process.OutputDataReceived += (_, e) => { if (e.Data is not null) _output.Enqueue(e.Data); };
        process.ErrorDataReceived += (_, e) => { if (e.Data is not null) _output.Enqueue(e.Data); };
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
    }

    public int Pid => _process.Id;

    /// <summary>Descriptors the service holds open right now, read from /proc.</summary>
    public int OpenDescriptors() => Directory.GetFiles($"/proc/{Pid}/fd").Length;

    /// <summary>A field of /proc/PID/status in KiB (VmRSS, VmHWM …).</summary>
    public long StatusKiB(string field)
    {
        var line = File.ReadLines($"/proc/{Pid}/status").First(l => l.StartsWith(field + ":", StringComparison.Ordinal));
        return long.Parse(line[(field.Length + 1)..].Trim().Split(' ')[0], System.Globalization.CultureInfo.InvariantCulture);
    }
    public Uri HttpBase { get; }
    public bool HasExited => _process.HasExited;
    public string Output => string.Join('\n', _output);

    /// <param name="slots">Runner__Slots; null leaves it to the service's configuration files.</param>
    /// <param name="serviceDll">Another copy of the service (default: this build's, <see cref="RepoPaths.ServiceDll"/>).</param>
    /// <param name="workingDirectory">The current folder of the service (default: the service's folder).</param>
    public static async Task<RunnerProcess> StartAsync(Uri broker, ITestOutputHelper? output, int? slots,
        IReadOnlyDictionary<string, string>? settings = null, string? instanceId = null, int? openFileLimit = null,
        string? serviceDll = null, string? workingDirectory = null)
    {
        var port = FreePort();
        // With an open-file limit the shell lowers it and execs dotnet in place: the pid stays the service's.
        var start = new ProcessStartInfo(openFileLimit is null ? "dotnet" : "/bin/sh")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
            WorkingDirectory = workingDirectory ?? Path.GetDirectoryName(serviceDll) ?? RepoPaths.ServiceDirectory,
        };
        if (openFileLimit is { } limit)
        {
            start.ArgumentList.Add("-c");
            start.ArgumentList.Add($"ulimit -n {limit} && exec dotnet \"$0\"");
        }
        start.ArgumentList.Add(serviceDll ?? RepoPaths.ServiceDll);
        start.Environment["ConnectionStrings__RabbitMq"] = broker.ToString();
        if (slots is not null)
            start.Environment["Runner__Slots"] = slots.Value.ToString(System.Globalization.CultureInfo.InvariantCulture);
        start.Environment["Runner__HttpUrl"] = $"http://127.0.0.1:{port}";
        start.Environment["Runner__InstanceId"] = instanceId ?? $"test-{Guid.NewGuid():N}"[..17];
        start.Environment["DOTNET_NOLOGO"] = "1";
        if (StockWorker.WorkerCommandOverride is { } worker)
            start.Environment["Runner__WorkerCommand"] = worker;
        foreach (var (key, value) in settings ?? new Dictionary<string, string>())
            start.Environment[key] = value;

        var runner = new RunnerProcess(Process.Start(start)!, new Uri($"http://127.0.0.1:{port}/"), output);
        try
        {
            await runner.WaitUntilReadyAsync(TimeSpan.FromSeconds(60));
        }
        catch
        {
            await runner.DisposeAsync();
            throw;
        }
        return runner;
    }

    async Task WaitUntilReadyAsync(TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (DateTime.UtcNow < deadline)
        {
            if (_process.HasExited)
                throw new InvalidOperationException($"RunnerService exited with {_process.ExitCode} during start:\n{Output}");
            try
            {
                using var response = await _http.GetAsync("health/ready");
                if (response.StatusCode == HttpStatusCode.OK)
                    return;
            }
            catch (HttpRequestException)
            {
            }
            catch (TaskCanceledException)
            {
            }
            await Task.Delay(100);
        }
        throw new TimeoutException($"RunnerService did not become ready within {timeout}:\n{Output}");
    }

    public async Task<bool> IsReadyAsync()
    {
        try
        {
            using var response = await _http.GetAsync("health/ready");
            return response.StatusCode == HttpStatusCode.OK;
        }
        catch (HttpRequestException)
        {
            return false;
        }
    }

    public async Task<ServiceStatus> GetStatusAsync() =>
        (await _http.GetFromJsonAsync<ServiceStatus>("status"))!;

    /// <summary>
    /// The status once every slot is free and no worker without a session is left (or the last one seen after 5 s, a
    /// worker's exit grace). A completion is published while its worker exits, and the slot is released when the
    /// process is gone, a moment after the completion. With <paramref name="idleWorkers"/> (reuse mode) that many
    /// idle pooled workers may stay alive.
    /// </summary>
    public async Task<ServiceStatus> GetSettledStatusAsync(int idleWorkers = 0)
    {
        var deadline = DateTime.UtcNow.AddSeconds(5);
        while (true)
        {
            var status = await GetStatusAsync();
            if ((status.SlotsBusy == 0 && status.WorkersAlive <= status.Workers.Count + idleWorkers) || DateTime.UtcNow > deadline)
                return status;
            await Task.Delay(10);
        }
    }

    /// <summary>Pids of this service's live child processes, read from /proc (an outside view, not the service's own).</summary>
    public IReadOnlyList<int> ChildPids()
    {
        var pids = new List<int>();
        try
        {
            foreach (var task in Directory.EnumerateDirectories($"/proc/{Pid}/task"))
            {
                var children = File.ReadAllText(Path.Combine(task, "children"));
                foreach (var pid in children.Split(' ', StringSplitOptions.RemoveEmptyEntries))
                    pids.Add(int.Parse(pid, System.Globalization.CultureInfo.InvariantCulture));
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

    /// <summary>SIGKILL: the service gets no chance to clean up.</summary>
    public async Task KillAsync()
    {
        if (!_process.HasExited)
            _process.Kill();
        await _process.WaitForExitAsync();
    }

    /// <summary>SIGTERM and wait for a graceful exit.</summary>
    public async Task StopAsync(TimeSpan timeout)
    {
        if (_process.HasExited)
            return;
        ProcessSignals.Send(_process.Id, ProcessSignals.SIGTERM);
        using var cancel = new CancellationTokenSource(timeout);
        try
        {
            await _process.WaitForExitAsync(cancel.Token);
        }
        catch (OperationCanceledException)
        {
            await KillAsync();
        }
    }

    public async ValueTask DisposeAsync()
    {
        await StopAsync(TimeSpan.FromSeconds(20));
        _http.Dispose();
        if (_testOutput is not null)
        {
            try
            {
                _testOutput.WriteLine($"--- RunnerService pid {_process.Id} output ---\n{Output}");
            }
            catch (InvalidOperationException)
            {
                // the test has already finished reporting
            }
        }
        _process.Dispose();
    }

    static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }
}

public sealed record ServiceStatus(string Instance, int Pid, int SlotsTotal, int SlotsBusy, int PeakSlotsBusy, int WorkersAlive, int PeakWorkersAlive,
    IReadOnlyList<ServiceWorkerStatus> Workers, ServiceSettings? Settings = null);

/// <summary>The service's effective settings as <c>/status</c> shows them.</summary>
public sealed record ServiceSettings(string WorkerCommand, string WorkerKind, int Slots, string Broker, string SagaStore, string SagaStoreLocation, string ContentRoot);

public sealed record ServiceWorkerStatus(int Pid, Guid InvocationId, string TaskName, string State, int Attempt, double AgeSeconds, IReadOnlyList<Guid> WaitingFor);
