using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using MassTransit;
using RunnerService.Contracts;

namespace RunnerService.Bench;

/// <summary>The figures (a)–(g), for the service and the naive baseline.</summary>
sealed class Scenarios(BenchOptions o, BrokerAdmin admin, Report report)
{
    static readonly JsonElement EchoArgs = JsonDocument.Parse("{\"text\":\"hi\"}").RootElement.Clone();
    readonly int? _brokerPid = ProcStats.ReadPidFile(o.BrokerPidFile);

    static void Log(string message) => Console.Error.WriteLine($"[bench {DateTime.Now:HH:mm:ss}] {message}");

    Task<ScenarioEnvironment> RunnerEnvironmentAsync(string scenario, BenchBus.Events events, int slots, string? workerCommand = null,
        IReadOnlyDictionary<string, string>? extra = null) =>
        ScenarioEnvironment.StartAsync(admin, scenario, events,
            (vhost, name, state) => ChildService.StartRunnerAsync(o, name, vhost, slots, workerCommand ?? o.AotWorkerPath, state, extra));

    Task<ScenarioEnvironment> NaiveEnvironmentAsync(string scenario) =>
        ScenarioEnvironment.StartAsync(admin, scenario, BenchBus.Events.None,
            (vhost, name, _) => ChildService.StartNaiveAsync(o, name, vhost, o.Slots));

    static RunInvocation Invocation(string task, JsonElement? arguments, Guid? id = null) => new()
    {
        InvocationId = id ?? NewId.NextGuid(),
        TaskName = task,
        Arguments = arguments,
    };

    static JsonElement Json(string json) => JsonDocument.Parse(json).RootElement.Clone();

    // ---------------------------------------------------------------- (a) throughput

    /// <summary>(a) for the service with the AOT worker: N echo invocations on the slots, per run.</summary>
    public async Task ThroughputAsync()
    {
        var figure = report.Add(new Figure
        {
            Id = "a", Name = "(a) throughput, fresh AOT process each", Unit = "inv/s", Target = "≥ 500", Meets = v => v >= 500, BaselineId = "a.base",
        });
        var sustained = report.Add(new Figure
        {
            Id = "a.sustained", Name = "(a) … incl. saga catching up", Unit = "inv/s", BaselineId = "a.base",
        });
        var capacity = report.Add(new Figure
        {
            Id = "a.capacity", Name = "(a) derived: cores ÷ own CPU ms per invocation (service+workers+broker+client)", Unit = "inv/s",
            Note = "what the measured CPU cost per invocation allows on this machine with no other load; not a throughput measurement",
        });
        var serviceCpu = report.Add(new Figure
        {
            Id = "a.service_cpu", Name = "(a) service CPU per fresh invocation (/proc utime+stime, until the saga drained)", Unit = "ms",
            Target = "≤ 1.0", Meets = v => v <= 1.0,
            Note = "each run: cpu_ms_per_invocation_service of figure a's details (service process only; workers and broker not in it)",
        });
        await using var env = await RunnerEnvironmentAsync("a", BenchBus.Events.None, o.Slots, extra: PerfEnvironment());
        await WarmUpAsync(env, 1000, figure);
        for (var run = 0; run < o.Runs; run++)
        {
            using var perf = run == 0 && o.PerfRecord is not null ? StartPerf(o.PerfRecord) : null;
            var r = await ThroughputRunAsync(env, o.ThroughputN, "echo", EchoArgs, sagaQueue: "invocation-state");
            perf?.Stop();
            figure.Runs.Add(r.PerSecond);
            sustained.Runs.Add(r.SustainedPerSecond);
            var own = new[] { "service", "workers", "broker", "bench_client" }.Sum(k => Convert.ToDouble(r.Details[$"cpu_ms_per_invocation_{k}"], CultureInfo.InvariantCulture));
            capacity.Runs.Add(Environment.ProcessorCount * 1000 / own);
            serviceCpu.Runs.Add(Convert.ToDouble(r.Details["cpu_ms_per_invocation_service"], CultureInfo.InvariantCulture));
            figure.Details[$"run{run + 1}"] = r.Details;
            Log($"(a) run {run + 1}: {r.PerSecond:F0}/s completions, {r.SustainedPerSecond:F0}/s incl. saga drain, failures {r.Failures}");
        }
        figure.Details["service_peak_rss_mb"] = Math.Round(ProcStats.StatusKb(env.Service.Pid, "VmHWM") / 1024.0, 1);
        figure.Details["n"] = o.ThroughputN;
    }

    /// <summary>(a) in reuse mode (<c>Runner:MaxInvocationsPerProcess</c>): the same workload, processes run up to 1,000 invocations each.</summary>
    public async Task ThroughputReuseAsync()
    {
        var figure = report.Add(new Figure
        {
            Id = "a.reuse", Name = "(a) throughput, reuse mode (MaxInvocationsPerProcess 1000)", Unit = "inv/s", Target = "≥ 1,800", Meets = v => v >= 1800,
            BaselineId = "a.base",
        });
        var extra = PerfEnvironment() ?? [];
        extra["Runner__MaxInvocationsPerProcess"] = "1000";
        await using var env = await RunnerEnvironmentAsync("areuse", BenchBus.Events.None, o.Slots, extra: extra);
        await WarmUpAsync(env, 1000, figure);
        for (var run = 0; run < o.Runs; run++)
        {
            using var perf = run == 0 && o.PerfRecord is not null ? StartPerf(o.PerfRecord + ".reuse") : null;
            var r = await ThroughputRunAsync(env, o.ThroughputN, "echo", EchoArgs, sagaQueue: "invocation-state");
            perf?.Stop();
            figure.Runs.Add(r.PerSecond);
            figure.Details[$"run{run + 1}"] = r.Details;
            Log($"(a, reuse) run {run + 1}: {r.PerSecond:F0}/s completions, {r.SustainedPerSecond:F0}/s incl. saga drain, failures {r.Failures}");
        }
        figure.Details["n"] = o.ThroughputN;
    }

    /// <summary>(a) for the service driving the JIT worker apphost: separates the service's cost from the worker's start-up.</summary>
    public async Task ThroughputJitWorkerAsync()
    {
        var figure = report.Add(new Figure
        {
            Id = "a.jit", Name = "(a) throughput, service + JIT worker", Unit = "inv/s", BaselineId = "a.base",
        });
        await using var env = await RunnerEnvironmentAsync("ajit", BenchBus.Events.None, o.Slots, workerCommand: o.JitWorkerAppHost);
        await WarmUpAsync(env, 60, figure);
        for (var run = 0; run < o.Runs; run++)
        {
            var r = await ThroughputRunAsync(env, o.JitWorkerThroughputN, "echo", EchoArgs, sagaQueue: "invocation-state");
            figure.Runs.Add(r.PerSecond);
            figure.Details[$"run{run + 1}"] = r.Details;
            Log($"(a, JIT worker) run {run + 1}: {r.PerSecond:F1}/s");
        }
        figure.Details["n"] = o.JitWorkerThroughputN;
    }

    sealed record ThroughputResult(double PerSecond, double SustainedPerSecond, int Failures, Dictionary<string, object?> Details);

    async Task<ThroughputResult> ThroughputRunAsync(ScenarioEnvironment env, int n, string task, JsonElement args, string? sagaQueue)
    {
        var before = CpuSnapshot.Take(env.Service.Pid, _brokerPid);
        var load = ProcStats.LoadAverage();
        var clock = Stopwatch.StartNew();
        using var cts = new CancellationTokenSource(TimeSpan.FromMinutes(10));
        var runs = new Task<InvocationCompleted>[n];
        for (var i = 0; i < n; i++)
            runs[i] = env.Bus.Client.RunAsync(Invocation(task, args), cts.Token);
        var completed = await Task.WhenAll(runs);
        var elapsed = clock.Elapsed;
        var atCompletion = CpuSnapshot.Take(env.Service.Pid, _brokerPid);

        // The saga records every invocation (3 events each); if it lags, the completions/s are not sustainable.
        uint backlog = 0;
        var drained = elapsed;
        if (sagaQueue is not null)
        {
            backlog = (await BrokerAdmin.QueueDepthAsync(env.VirtualHost, sagaQueue))?.Ready ?? 0;
            var deadline = DateTime.UtcNow.AddMinutes(3);
            while (backlog > 0 && DateTime.UtcNow < deadline)
            {
                await Task.Delay(50);
                backlog = (await BrokerAdmin.QueueDepthAsync(env.VirtualHost, sagaQueue))?.Ready ?? 0;
            }
            drained = clock.Elapsed;
            backlog = (await BrokerAdmin.QueueDepthAsync(env.VirtualHost, sagaQueue))?.Ready ?? 0;
        }
        var after = CpuSnapshot.Take(env.Service.Pid, _brokerPid);
        var failures = completed.Count(c => c.Status != InvocationStatus.Succeeded);
        var details = CpuSnapshot.PerInvocation(before, after, n);
        details["cpu_until_last_completion"] = CpuSnapshot.PerInvocation(before, atCompletion, n);
        details["seconds_to_last_completion"] = Math.Round(elapsed.TotalSeconds, 3);
        details["seconds_until_saga_drained"] = Math.Round(drained.TotalSeconds, 3);
        details["saga_backlog_at_last_completion_drain_end"] = backlog;
        details["failures"] = failures;
        details["queued_for_ms_p50"] = Math.Round(Stats.Median([.. completed.Select(c => c.QueuedFor.TotalMilliseconds)]), 2);
        details["run_for_ms_p50"] = Math.Round(Stats.Median([.. completed.Select(c => c.RunFor.TotalMilliseconds)]), 3);
        details["loadavg_before"] = load;
        if (failures > 0)
            details["first_failure"] = completed.First(c => c.Status != InvocationStatus.Succeeded).Error?.ToString();
        return new ThroughputResult(n / elapsed.TotalSeconds, n / drained.TotalSeconds, failures, details);
    }

    /// <summary>
    /// Runs <paramref name="count"/> echo invocations (in waves of 2×slots, so every code path runs many times), then
    /// waits until the service is idle: a fresh .NET service spends seconds of CPU on tiered (PGO) re-compilation of
    /// its hot methods, which would otherwise be billed to the first measured run. Records how much that was.
    /// </summary>
    async Task WarmUpAsync(ScenarioEnvironment env, int count, Figure? figure = null)
    {
        var before = ProcStats.Cpu(env.Service.Pid);
        var clock = Stopwatch.StartNew();
        using var cts = new CancellationTokenSource(TimeSpan.FromMinutes(5));
        var wave = Math.Max(2, 2 * o.Slots);
        for (var done = 0; done < count; done += wave)
            await Task.WhenAll(Enumerable.Range(0, Math.Min(wave, count - done)).Select(_ => env.Bus.Client.RunAsync(Invocation("echo", EchoArgs), cts.Token)));
        var ran = clock.Elapsed;
        var idle = await SettleAsync(env.Service.Pid);
        var used = ProcStats.Cpu(env.Service.Pid) - before;
        if (figure is not null)
        {
            figure.Details["warm_up"] = new Dictionary<string, object?>
            {
                ["invocations"] = count,
                ["seconds"] = Math.Round(ran.TotalSeconds, 2),
                ["service_cpu_ms_per_invocation_during_warm_up"] = Math.Round(used.SelfMs / count, 2),
                ["seconds_until_service_idle_after"] = Math.Round(idle.TotalSeconds, 2),
            };
        }
    }

    /// <summary>Waits (up to 15 s) until the process uses under 2% of a core over 500 ms.</summary>
    static async Task<TimeSpan> SettleAsync(int pid)
    {
        var clock = Stopwatch.StartNew();
        while (clock.Elapsed < TimeSpan.FromSeconds(15))
        {
            var a = ProcStats.Cpu(pid);
            await Task.Delay(500);
            if ((ProcStats.Cpu(pid) - a).SelfMs <= 10)
                break;
        }
        return clock.Elapsed;
    }

    /// <summary>With --perf-record: the service writes a perf map, so its JIT-compiled frames have names.</summary>
    Dictionary<string, string>? PerfEnvironment() => o.PerfRecord is null ? null
        : new Dictionary<string, string> { ["DOTNET_PerfMapEnabled"] = "1", ["DOTNET_EnableWriteXorExecute"] = "0" };

    static PerfSession? StartPerf(string output)
    {
        try
        {
            var start = new ProcessStartInfo("perf") { UseShellExecute = false, RedirectStandardError = true };
            foreach (var a in new[] { "record", "-a", "-g", "-F", "499", "-o", output })
                start.ArgumentList.Add(a);
            var p = Process.Start(start)!;
            Thread.Sleep(500);
            return new PerfSession(p);
        }
        catch (System.ComponentModel.Win32Exception ex)
        {
            Log($"perf not available: {ex.Message}");
            return null;
        }
    }

    /// <summary>A running `perf record`; Stop sends SIGINT (perf writes its file) and waits.</summary>
    sealed class PerfSession(Process process) : IDisposable
    {
        public void Stop()
        {
            if (process.HasExited)
                return;
            ProcStats.Signal(process.Id, 2 /* SIGINT */);
            _ = process.StandardError.ReadToEnd();
            process.WaitForExit(30_000);
        }

        public void Dispose()
        {
            Stop();
            process.Dispose();
        }
    }

    // ---------------------------------------------------------------- (b) latency

    public Task LatencyAsync() => LatencyAsync(warmWorkers: 0);

    /// <summary>(b) with <c>Runner:WarmWorkers</c>: still a fresh process per invocation, but started before it is needed.</summary>
    public Task LatencyWarmAsync() => LatencyAsync(warmWorkers: 2);

    async Task LatencyAsync(int warmWorkers)
    {
        var id = warmWorkers == 0 ? "b" : "b.warm";
        var label = warmWorkers == 0 ? "" : $", warm pool of {warmWorkers}";
        var p50 = report.Add(new Figure { Id = $"{id}.p50", Name = $"(b) publish→completed p50{label}", Unit = "ms", Target = "≤ 5", Meets = v => v <= 5, BaselineId = "b.base.p50" });
        var p99 = report.Add(new Figure { Id = $"{id}.p99", Name = $"(b) publish→completed p99{label}", Unit = "ms", Target = "≤ 20", Meets = v => v <= 20, BaselineId = "b.base.p99" });
        await using var env = await RunnerEnvironmentAsync(id.Replace(".", "", StringComparison.Ordinal), BenchBus.Events.Started, o.Slots,
            extra: warmWorkers == 0 ? null : new Dictionary<string, string> { ["Runner__WarmWorkers"] = warmWorkers.ToString(CultureInfo.InvariantCulture) });
        await WarmUpAsync(env, 500, p50);
        for (var run = 0; run < o.Runs; run++)
        {
            var samples = await SequentialAsync(env, o.LatencyN, breakdown: true);
            p50.Runs.Add(Stats.Percentile([.. samples.Select(s => s.TotalMs)], 50));
            p99.Runs.Add(Stats.Percentile([.. samples.Select(s => s.TotalMs)], 99));
            p50.Details[$"run{run + 1}_breakdown_p50_ms"] = Breakdown(samples);
            Log($"({id}) run {run + 1}: p50 {p50.Runs[^1]:F2} ms, p99 {p99.Runs[^1]:F2} ms");
        }
        p50.Details["n_per_run"] = o.LatencyN;
    }

    sealed record LatencySample(double TotalMs, double? QueuedMs, double? SpawnMs, double? RunMs, double? NotifyMs);

    static Dictionary<string, object?> Breakdown(List<LatencySample> samples)
    {
        static double? P50(IEnumerable<double?> values)
        {
            var v = values.Where(x => x.HasValue).Select(x => x!.Value).ToList();
            return v.Count == 0 ? null : Math.Round(Stats.Median(v), 3);
        }
        return new Dictionary<string, object?>
        {
            ["total"] = P50(samples.Select(s => (double?)s.TotalMs)),
            ["1_submit_to_consumer (QueuedFor)"] = P50(samples.Select(s => s.QueuedMs)),
            ["2_consumer_to_process_started"] = P50(samples.Select(s => s.SpawnMs)),
            ["3_started_to_completed_published (incl. Started publish, worker run, exit)"] = P50(samples.Select(s => s.RunMs)),
            ["4_completed_to_client"] = P50(samples.Select(s => s.NotifyMs)),
        };
    }

    async Task<List<LatencySample>> SequentialAsync(ScenarioEnvironment env, int n, bool breakdown)
    {
        var samples = new List<LatencySample>(n);
        for (var i = 0; i < n; i++)
        {
            var invocation = Invocation("echo", EchoArgs);
            var submitted = DateTimeOffset.UtcNow;
            var clock = Stopwatch.StartNew();
            using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
            var completed = await env.Bus.Client.RunAsync(invocation with { SubmittedAt = submitted }, cts.Token);
            var total = clock.Elapsed.TotalMilliseconds;
            var received = DateTimeOffset.UtcNow;
            if (completed.Status != InvocationStatus.Succeeded)
                throw new InvalidOperationException($"echo failed: {completed.Error}");
            double? queued = null, spawn = null, run = null, notify = null;
            if (breakdown)
            {
                queued = completed.QueuedFor.TotalMilliseconds;
                notify = (received - completed.CompletedAt).TotalMilliseconds;
                try
                {
                    var (started, _) = await env.Bus.Started.WaitAsync(invocation.InvocationId, TimeSpan.FromSeconds(2));
                    spawn = (started.StartedAt - submitted).TotalMilliseconds - queued;
                    run = (completed.CompletedAt - started.StartedAt).TotalMilliseconds;
                }
                catch (TimeoutException)
                {
                }
            }
            samples.Add(new LatencySample(total, queued, spawn, run, notify));
        }
        return samples;
    }

    // ---------------------------------------------------------------- (c) wait → resume

    public async Task WaitResumeAsync()
    {
        var p50 = report.Add(new Figure { Id = "c.p50", Name = "(c) dependency completed→waiter resumed p50", Unit = "ms", Target = "≤ 5", Meets = v => v <= 5 });
        var p99 = report.Add(new Figure { Id = "c.p99", Name = "(c) dependency completed→waiter resumed p99", Unit = "ms" });
        await using var env = await RunnerEnvironmentAsync("c", BenchBus.Events.Waiting | BenchBus.Events.Resumed, o.Slots);
        await WarmUpAsync(env, 300, p50);
        await WaitResumeSamplesAsync(env, 20);
        await SettleAsync(env.Service.Pid); // warm-up of the wait path
        var fellBack = 0;
        for (var run = 0; run < o.Runs; run++)
        {
            var samples = await WaitResumeSamplesAsync(env, o.ResumeN);
            fellBack += samples.Count(s => !s.FromResumedEvent);
            p50.Runs.Add(Stats.Percentile([.. samples.Select(s => s.Ms)], 50));
            p99.Runs.Add(Stats.Percentile([.. samples.Select(s => s.Ms)], 99));
            p50.Details[$"run{run + 1}_waiter_completed_after_dependency_p50_ms"] = Math.Round(Stats.Median([.. samples.Select(s => s.WaiterDoneMs)]), 3);
            Log($"(c) run {run + 1}: p50 {p50.Runs[^1]:F2} ms, p99 {p99.Runs[^1]:F2} ms");
        }
        p50.Details["n_per_run"] = o.ResumeN;
        p50.Details["measured_to"] = fellBack == 0 ? "InvocationResumed.ResumedAt" : $"waiter completion for {fellBack} samples (no InvocationResumed event)";
    }

    sealed record ResumeSample(double Ms, double WaiterDoneMs, bool FromResumedEvent);

    async Task<List<ResumeSample>> WaitResumeSamplesAsync(ScenarioEnvironment env, int n)
    {
        var client = env.Bus.Client;
        var samples = new List<ResumeSample>(n);
        for (var i = 0; i < n; i++)
        {
            using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
            var x = NewId.NextGuid();
            var waiter = Invocation("wait_for", Json($"{{\"invocationId\":\"{x}\"}}"));
            var waiterDone = client.RunAsync(waiter, cts.Token);
            await env.Bus.Waiting.WaitAsync(waiter.InvocationId, TimeSpan.FromSeconds(30));
            // Only measure the resume path: wait until the saga has registered the waiter on X.
            var registered = Stopwatch.StartNew();
            while (true)
            {
                var status = await client.GetStatusAsync(x, cts.Token);
                if (status.Waiters.Contains(waiter.InvocationId))
                    break;
                if (registered.Elapsed > TimeSpan.FromSeconds(30))
                    throw new TimeoutException($"the saga did not register {waiter.InvocationId} as a waiter of {x}");
                await Task.Delay(2, cts.Token);
            }
            var dependency = await client.RunAsync(Invocation("echo", EchoArgs, x), cts.Token);
            var waiterCompleted = await waiterDone;
            if (waiterCompleted.Status != InvocationStatus.Succeeded)
                throw new InvalidOperationException($"wait_for failed: {waiterCompleted.Error}");
            double ms;
            var fromResumed = true;
            try
            {
                var (resumed, _) = await env.Bus.Resumed.WaitAsync(waiter.InvocationId, TimeSpan.FromSeconds(1));
                ms = (resumed.ResumedAt - dependency.CompletedAt).TotalMilliseconds;
            }
            catch (TimeoutException)
            {
                ms = (waiterCompleted.CompletedAt - dependency.CompletedAt).TotalMilliseconds;
                fromResumed = false;
            }
            samples.Add(new ResumeSample(ms, (waiterCompleted.CompletedAt - dependency.CompletedAt).TotalMilliseconds, fromResumed));
        }
        return samples;
    }

    // ---------------------------------------------------------------- (d) CPU-bound efficiency

    public async Task CpuBoundAsync(bool baseline)
    {
        var ideal = o.CpuN * o.CpuMs / (double)o.Slots / 1000;
        var figure = report.Add(baseline
            ? new Figure { Id = "d.base", Name = $"(d) naive: {o.CpuN}×cpu {o.CpuMs} ms / ideal {ideal:0.##} s", Unit = "× ideal" }
            : new Figure { Id = "d", Name = $"(d) {o.CpuN}×cpu {o.CpuMs} ms on {o.Slots} slots / ideal {ideal:0.##} s", Unit = "× ideal", Target = "≤ 1.1", Meets = v => v <= 1.1, BaselineId = "d.base" });
        figure.Details["ideal_seconds"] = ideal;
        await using var env = baseline ? await NaiveEnvironmentAsync("dbase") : await RunnerEnvironmentAsync("d", BenchBus.Events.None, o.Slots);
        await WarmUpAsync(env, baseline ? 10 : 500, figure);
        await BatchRunsAsync(env, figure, baseline ? "d, naive" : "d", "cpu", o.CpuN, o.CpuMs, ideal);
    }

    /// <summary>
    /// The demo of README (deploy/local/demo.sh, issue 14's target): 50 × sleep {ms: 100} submitted at once to a service
    /// with the slots (2) and otherwise its default configuration, first publish → last completion ÷ the ideal 2.5 s.
    /// A first, unmeasured run on the fresh service is recorded as "cold_first_run" (what a user running the demo
    /// once sees); then the usual warm-up and the measured runs.
    /// </summary>
    public async Task DemoSleepAsync()
    {
        const int n = 50, ms = 100;
        var ideal = n * ms / (double)o.Slots / 1000;
        var figure = report.Add(new Figure
        {
            Id = "demo", Name = $"demo: {n}×sleep {ms} ms on {o.Slots} slots / ideal {ideal:0.##} s", Unit = "× ideal", Target = "≤ 1.2", Meets = v => v <= 1.2,
        });
        figure.Details["ideal_seconds"] = ideal;
        await using var env = await RunnerEnvironmentAsync("demo", BenchBus.Events.None, o.Slots);
        var cold = report.Add(new Figure { Id = "demo.cold", Name = "demo: first run on the fresh service (not warmed up), one sample", Unit = "× ideal" });
        await BatchRunsAsync(env, cold, "demo, cold", "sleep", n, ms, ideal, runs: 1);
        await WarmUpAsync(env, 200, figure);
        await BatchRunsAsync(env, figure, "demo", "sleep", n, ms, ideal);
    }

    /// <summary>Runs of <paramref name="n"/> × task {ms} submitted at once; each run's figure value is first publish → last completion ÷ ideal.</summary>
    async Task BatchRunsAsync(ScenarioEnvironment env, Figure figure, string label, string task, int n, int ms, double ideal, int? runs = null)
    {
        var args = Json($"{{\"ms\":{ms}}}");
        for (var run = 0; run < (runs ?? o.Runs); run++)
        {
            var before = CpuSnapshot.Take(env.Service.Pid, _brokerPid);
            var clock = Stopwatch.StartNew();
            using var cts = new CancellationTokenSource(TimeSpan.FromMinutes(5));
            var done = await Task.WhenAll(Enumerable.Range(0, n).Select(_ => env.Bus.Client.RunAsync(Invocation(task, args), cts.Token)));
            var seconds = clock.Elapsed.TotalSeconds;
            var after = CpuSnapshot.Take(env.Service.Pid, _brokerPid);
            if (done.FirstOrDefault(c => c.Status != InvocationStatus.Succeeded) is { } failed)
                throw new InvalidOperationException($"a {task} invocation failed: {failed.Error}");
            figure.Runs.Add(seconds / ideal);
            var details = CpuSnapshot.PerInvocation(before, after, n);
            details["seconds"] = Math.Round(seconds, 3);
            details["run_for_ms_p50"] = Math.Round(Stats.Median([.. done.Select(c => c.RunFor.TotalMilliseconds)]), 1);
            details["run_for_ms_max"] = Math.Round(done.Max(c => c.RunFor.TotalMilliseconds), 1);
            details["queued_for_ms_max"] = Math.Round(done.Max(c => c.QueuedFor.TotalMilliseconds), 1);
            details["loadavg"] = ProcStats.LoadAverage();
            figure.Details[$"run{run + 1}"] = details;
            Log($"({label}) run {run + 1}: {seconds:F3} s = {seconds / ideal:F3} × ideal, run time p50 {details["run_for_ms_p50"]} ms");
        }
        figure.Details["n"] = n;
        figure.Details["ms"] = ms;
    }

    // ---------------------------------------------------------------- baseline (a), (b)

    public async Task BaselineAsync()
    {
        var a = report.Add(new Figure { Id = "a.base", Name = "(a) naive baseline throughput", Unit = "inv/s" });
        var p50 = report.Add(new Figure { Id = "b.base.p50", Name = "(b) naive publish→completed p50", Unit = "ms" });
        var p99 = report.Add(new Figure { Id = "b.base.p99", Name = "(b) naive publish→completed p99", Unit = "ms" });
        await using var env = await NaiveEnvironmentAsync("base");
        await WarmUpAsync(env, 10, a);
        for (var run = 0; run < o.Runs; run++)
        {
            var r = await ThroughputRunAsync(env, o.BaselineThroughputN, "echo", EchoArgs, sagaQueue: null);
            a.Runs.Add(r.PerSecond);
            a.Details[$"run{run + 1}"] = r.Details;
            var samples = await SequentialAsync(env, o.BaselineLatencyN, breakdown: false);
            p50.Runs.Add(Stats.Percentile([.. samples.Select(s => s.TotalMs)], 50));
            p99.Runs.Add(Stats.Percentile([.. samples.Select(s => s.TotalMs)], 99));
            Log($"(baseline) run {run + 1}: {r.PerSecond:F1}/s, p50 {p50.Runs[^1]:F1} ms, p99 {p99.Runs[^1]:F1} ms");
        }
        a.Details["n"] = o.BaselineThroughputN;
        p50.Details["n_per_run"] = o.BaselineLatencyN;
    }

    // ---------------------------------------------------------------- (e) spawn → first reply, spawn floor

    public async Task SpawnAsync()
    {
        var aot = report.Add(new Figure { Id = "e", Name = "(e) spawn→hello, AOT worker (.NET parent)", Unit = "ms", Target = "≤ 3.5", Meets = v => v <= 3.5, BaselineId = "e.dll" });
        var apphost = report.Add(new Figure { Id = "e.jit", Name = "(e) spawn→hello, JIT apphost WorkerProcess", Unit = "ms", BaselineId = "e.dll" });
        var dll = report.Add(new Figure { Id = "e.dll", Name = "(e) spawn→hello, dotnet WorkerProcess.dll (naive)", Unit = "ms" });
        var native = report.Add(new Figure { Id = "e.c", Name = "(e) spawn→hello, AOT worker (C posix_spawn parent)", Unit = "ms", Target = "≤ 3.5", BaselineId = "e.dll", Meets = v => v <= 3.5 });
        var floor = report.Add(new Figure { Id = "floor", Name = $"spawn floor: AOT worker start+hello+exit, {Environment.ProcessorCount} parallel (.NET parent)", Unit = "proc/s" });
        var floorC = report.Add(new Figure { Id = "floor.c", Name = $"spawn floor: AOT worker start+hello+exit, {Environment.ProcessorCount} parallel (C parent)", Unit = "proc/s" });
        var floorDll = report.Add(new Figure { Id = "floor.dll", Name = $"spawn floor: dotnet WorkerProcess.dll, {Environment.ProcessorCount} parallel", Unit = "proc/s" });
        string[] none = [];
        await WorkerSpawner.FirstReplyAsync(o.AotWorkerPath, none, 10);
        await WorkerSpawner.FirstReplyAsync("dotnet", [o.JitWorkerDllPath], 2);
        // Issue 14's "worker start floor p50": one fresh AOT worker start+hello+exit, one at a time; from the C parent
        // (the machine's floor) when bench/tools/spawnfloor.c ran in every run, else from this .NET parent.
        var cycleC = new List<double>();
        var cycleNet = new List<double>();
        for (var run = 0; run < o.Runs; run++)
        {
            var cycles = new List<double>(o.SpawnN);
            aot.Runs.Add(Stats.Median(await WorkerSpawner.FirstReplyAsync(o.AotWorkerPath, none, o.SpawnN, cycles)));
            cycleNet.Add(Stats.Median(cycles));
            apphost.Runs.Add(Stats.Median(await WorkerSpawner.FirstReplyAsync(o.JitWorkerAppHost, none, o.JitSpawnN)));
            dll.Runs.Add(Stats.Median(await WorkerSpawner.FirstReplyAsync("dotnet", [o.JitWorkerDllPath], o.JitSpawnN)));
            floor.Runs.Add(await WorkerSpawner.FloorAsync(o.AotWorkerPath, none, o.SpawnN * 2, Environment.ProcessorCount));
            floorDll.Runs.Add(await WorkerSpawner.FloorAsync("dotnet", [o.JitWorkerDllPath], o.JitSpawnN, Environment.ProcessorCount));
            if (await WorkerSpawner.NativeFloorAsync(o.SpawnFloorToolPath, o.SpawnN, 1, o.AotWorkerPath) is { } seq)
            {
                native.Runs.Add(seq.GetProperty("p50_ms").GetDouble());
                if (seq.TryGetProperty("cycle_p50_ms", out var cycle))
                    cycleC.Add(cycle.GetDouble());
            }
            if (await WorkerSpawner.NativeFloorAsync(o.SpawnFloorToolPath, o.SpawnN * 2, Environment.ProcessorCount, o.AotWorkerPath) is { } par)
                floorC.Runs.Add(par.GetProperty("rate_per_s").GetDouble());
            Log($"(e) run {run + 1}: AOT {aot.Runs[^1]:F2} ms, apphost {apphost.Runs[^1]:F1} ms, dotnet dll {dll.Runs[^1]:F1} ms, floor {floor.Runs[^1]:F0}/s" +
                (floorC.Runs.Count > run ? $", C floor {floorC.Runs[^1]:F0}/s, C p50 {native.Runs[^1]:F2} ms" : ""));
        }
        var fromC = cycleC.Count == o.Runs;
        var start = report.Add(new Figure
        {
            Id = "start.p50",
            Name = $"worker start floor p50: AOT worker start+hello+exit, one at a time ({(fromC ? "C posix_spawn parent" : ".NET parent")})",
            Unit = "ms",
        });
        start.Runs.AddRange(fromC ? cycleC : cycleNet);
        start.Details["source"] = fromC ? "bench/tools/spawnfloor.c, 1 loop, cycle_p50_ms" : "WorkerSpawner (.NET Process), sequential cycle";
        start.Details["dotnet_parent_runs_ms"] = cycleNet.Select(v => Math.Round(v, 3)).ToList();
        start.Details["n_per_run"] = o.SpawnN;
        aot.Details["n_per_run"] = o.SpawnN;
        dll.Details["n_per_run"] = o.JitSpawnN;
        if (native.Runs.Count == 0)
            native.Note = "bench/tools/spawnfloor.c not built (no cc)";
    }

    // ---------------------------------------------------------------- (f) private memory per idle / paused worker

    public async Task MemoryAsync()
    {
        var idle = report.Add(new Figure { Id = "f.idle", Name = "(f) private memory, idle AOT worker", Unit = "MiB", Target = "≤ 2", Meets = v => v <= 2, BaselineId = "f.idle.dll" });
        var paused = report.Add(new Figure { Id = "f.paused", Name = "(f) private memory, paused AOT worker", Unit = "MiB", Target = "≤ 2", Meets = v => v <= 2, BaselineId = "f.idle.dll" });
        var idleDll = report.Add(new Figure { Id = "f.idle.dll", Name = "(f) private memory, idle dotnet WorkerProcess.dll", Unit = "MiB" });

        for (var run = 0; run < o.Runs; run++)
        {
            idle.Runs.Add(await IdleMemoryAsync(o.AotWorkerPath, [], idle, run));
            idleDll.Runs.Add(await IdleMemoryAsync("dotnet", [o.JitWorkerDllPath], idleDll, run));
        }

        await using var env = await RunnerEnvironmentAsync("f", BenchBus.Events.Waiting, o.Slots);
        env.KillOnDispose = true;
        for (var run = 0; run < o.Runs; run++)
        {
            var waiters = Enumerable.Range(0, o.MemoryN).Select(_ => Invocation("wait_for", Json($"{{\"invocationId\":\"{NewId.NextGuid()}\"}}"))).ToList();
            foreach (var w in waiters)
                await env.Bus.Client.SubmitAsync(w);
            var pids = new List<int>();
            foreach (var w in waiters)
                pids.Add((await env.Bus.Waiting.WaitAsync(w.InvocationId, TimeSpan.FromSeconds(60))).Message.ProcessId);
            await Task.Delay(300);
            var memories = pids.Select(ProcStats.SmapsRollup).Where(m => m is not null).Select(m => m!).ToList();
            var states = pids.Select(StateOf).ToList();
            paused.Runs.Add(Stats.Median([.. memories.Select(m => m.PrivateKb / 1024.0)]));
            paused.Details[$"run{run + 1}"] = MemoryDetails(memories, states);
        }
        idle.Details["workers_alive_at_once"] = o.MemoryN;
        paused.Note = "pid from InvocationWaitingFor.ProcessId; /proc state should be T (stopped)";
    }

    async Task<double> IdleMemoryAsync(string file, string[] args, Figure figure, int run)
    {
        // Several at once, as a warm pool would hold them: the executable's pages are then shared, not private.
        var workers = new List<WorkerSpawner.IdleWorker>();
        try
        {
            for (var i = 0; i < o.MemoryN; i++)
                workers.Add(await WorkerSpawner.StartAsync(file, args));
            await Task.Delay(300);
            var memories = workers.Select(w => ProcStats.SmapsRollup(w.Process.Id)).Where(m => m is not null).Select(m => m!).ToList();
            figure.Details[$"run{run + 1}"] = MemoryDetails(memories, null);
            return Stats.Median([.. memories.Select(m => m.PrivateKb / 1024.0)]);
        }
        finally
        {
            foreach (var w in workers)
                await w.DisposeAsync();
        }
    }

    static Dictionary<string, object?> MemoryDetails(List<ProcStats.Memory> memories, List<string>? states) => new()
    {
        ["private_clean_kb_p50"] = Stats.Median([.. memories.Select(m => (double)m.PrivateCleanKb)]),
        ["private_dirty_kb_p50"] = Stats.Median([.. memories.Select(m => (double)m.PrivateDirtyKb)]),
        ["rss_kb_p50"] = Stats.Median([.. memories.Select(m => (double)m.RssKb)]),
        ["pss_kb_p50"] = Stats.Median([.. memories.Select(m => (double)m.PssKb)]),
        ["states"] = states is null ? null : string.Join(',', states),
    };

    static string StateOf(int pid)
    {
        try
        {
            var stat = File.ReadAllText($"/proc/{pid}/stat");
            return stat[(stat.LastIndexOf(')') + 2)..].Split(' ')[0];
        }
        catch (IOException)
        {
            return "gone";
        }
    }

    // ---------------------------------------------------------------- (g) peak RSS with N queued and M paused

    public async Task PeakRssAsync()
    {
        var figure = report.Add(new Figure
        {
            Id = "g", Name = $"(g) service peak RSS, {o.Queued:N0} queued + {o.Paused:N0} paused", Unit = "MiB", Target = "≤ 300", Meets = v => v <= 300,
        });
        figure.Details["queued"] = o.Queued;
        figure.Details["paused"] = o.Paused;
        figure.Details["slots"] = o.PeakSlots;
        for (var run = 0; run < o.PeakRuns; run++)
        {
            await using var env = await RunnerEnvironmentAsync($"g{run + 1}", BenchBus.Events.Waiting, o.PeakSlots);
            env.KillOnDispose = true;
            var client = env.Bus.Client;
            var rssStart = ProcStats.StatusKb(env.Service.Pid, "VmRSS");
            var clock = Stopwatch.StartNew();

            // 1. Paused: wait_for invocations that are never submitted.
            var waiters = Enumerable.Range(0, o.Paused).Select(_ => Invocation("wait_for", Json($"{{\"invocationId\":\"{NewId.NextGuid()}\"}}"))).ToList();
            foreach (var chunk in waiters.Chunk(100))
                await Task.WhenAll(chunk.Select(w => client.SubmitAsync(w)));
            var pids = new List<int>(o.Paused);
            foreach (var w in waiters)
                pids.Add((await env.Bus.Waiting.WaitAsync(w.InvocationId, TimeSpan.FromMinutes(10))).Message.ProcessId);
            var pausedAfter = clock.Elapsed;
            var rssPaused = ProcStats.StatusKb(env.Service.Pid, "VmRSS");
            Log($"(g) run {run + 1}: {o.Paused} paused after {pausedAfter.TotalSeconds:F1} s");

            // 2. Queued: long sleeps; the slots run the first ones, the rest wait in the broker's queue.
            var sleeps = Enumerable.Range(0, o.Queued).Select(_ => Invocation("sleep", Json("{\"ms\":3600000}"))).ToList();
            foreach (var chunk in sleeps.Chunk(200))
                await Task.WhenAll(chunk.Select(s => client.SubmitAsync(s)));
            var published = clock.Elapsed;
            uint ready = 0;
            var deadline = DateTime.UtcNow.AddMinutes(5);
            while (DateTime.UtcNow < deadline)
            {
                ready = (await BrokerAdmin.QueueDepthAsync(env.VirtualHost, "run-invocation"))?.Ready ?? 0;
                var saga = (await BrokerAdmin.QueueDepthAsync(env.VirtualHost, "invocation-state"))?.Ready ?? 0;
                if (ready >= o.Queued - o.PeakSlots && saga == 0)
                    break;
                await Task.Delay(250);
            }
            await Task.Delay(1000);
            var hwm = ProcStats.StatusKb(env.Service.Pid, "VmHWM");
            var rss = ProcStats.StatusKb(env.Service.Pid, "VmRSS");
            var children = env.Service.ChildPids().Count;
            figure.Runs.Add(hwm / 1024.0);
            figure.Details[$"run{run + 1}"] = new Dictionary<string, object?>
            {
                ["vm_hwm_mb"] = Math.Round(hwm / 1024.0, 1),
                ["vm_rss_mb_at_end"] = Math.Round(rss / 1024.0, 1),
                ["vm_rss_mb_ready_idle"] = Math.Round(rssStart / 1024.0, 1),
                ["vm_rss_mb_after_paused_before_queued"] = Math.Round(rssPaused / 1024.0, 1),
                ["worker_processes_alive"] = children,
                ["ready_in_run_invocation_queue"] = ready,
                ["seconds_until_all_paused"] = Math.Round(pausedAfter.TotalSeconds, 1),
                ["seconds_until_queued_published"] = Math.Round(published.TotalSeconds, 1),
                ["seconds_total"] = Math.Round(clock.Elapsed.TotalSeconds, 1),
            };
            Log($"(g) run {run + 1}: VmHWM {hwm / 1024.0:F1} MiB, VmRSS {rss / 1024.0:F1} MiB, {children} workers alive, {ready} ready in queue");

            // The service is SIGKILLed on dispose; its workers must die with it (parent-death signal).
            await env.DisposeAsync();
            var gone = DateTime.UtcNow.AddSeconds(15);
            while (pids.Any(ProcStats.Alive) && DateTime.UtcNow < gone)
                await Task.Delay(100);
            var orphans = pids.Count(ProcStats.Alive);
            ((Dictionary<string, object?>)figure.Details[$"run{run + 1}"]!)["orphaned_workers_after_kill"] = orphans;
            if (orphans > 0)
                Log($"(g) WARNING: {orphans} paused workers outlived the killed service");
        }
    }
}
