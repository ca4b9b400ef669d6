using System.Diagnostics;
using System.Globalization;
using System.Text.Json;

namespace RunnerService.Bench;

/// <summary>
/// Celery in the same run (issue 14, item 3): bench/celery/driver.py drives one Celery prefork worker per configuration,
/// with concurrency = the bench's slots, on a fresh virtual host of the bench's broker; results go to redis.
/// </summary>
sealed class CeleryScenario(BenchOptions o, BrokerAdmin admin, Report report)
{
    static void Log(string message) => Console.Error.WriteLine($"[bench {DateTime.Now:HH:mm:ss}] {message}");

    public async Task RunAsync()
    {
        var driver = Path.Combine(o.RepoRoot, "bench", "celery", "driver.py");
        var defaults = report.Add(new Figure
        {
            Id = "celery.defaults", Name = $"Celery {o.Slots} prefork, defaults: {o.CeleryThroughputN} × echo", Unit = "tasks/s",
        });
        var acksLate = report.Add(new Figure
        {
            Id = "celery.acks_late", Name = $"Celery, task_acks_late + worker_prefetch_multiplier=1: {o.CeleryThroughputN} × echo", Unit = "tasks/s",
        });
        var acksLateP50 = report.Add(new Figure
        {
            Id = "celery.acks_late.p50", Name = "Celery acks_late, one at a time, publish→result p50", Unit = "ms",
        });
        var fresh = report.Add(new Figure
        {
            Id = "celery.fresh", Name = $"Celery acks_late + --max-tasks-per-child=1: {o.CeleryFreshThroughputN} × echo", Unit = "tasks/s",
        });

        await RunModeAsync(driver, "defaults", o.CeleryThroughputN, o.CeleryWarmup, 0, defaults, null);
        await RunModeAsync(driver, "acks_late", o.CeleryThroughputN, o.CeleryWarmup, o.CeleryLatencyN, acksLate, acksLateP50);
        await RunModeAsync(driver, "fresh", o.CeleryFreshThroughputN, o.CeleryFreshWarmup, 0, fresh, null);
    }

    async Task RunModeAsync(string driver, string mode, int n, int warmup, int latencyN, Figure figure, Figure? latency)
    {
        var vhostName = $"bench-celery-{mode.Replace('_', '-')}-{DateTime.UtcNow.ToString("HHmmssfff", CultureInfo.InvariantCulture)}";
        var vhost = await admin.CreateVirtualHostAsync(vhostName);
        try
        {
            var start = new ProcessStartInfo(o.CeleryPython) { UseShellExecute = false, RedirectStandardOutput = true, WorkingDirectory = o.RepoRoot };
            foreach (var a in new[]
            {
                driver, "--broker", vhost.ToString(), "--backend", o.CeleryBackend, "--mode", mode,
                "--concurrency", o.Slots.ToString(CultureInfo.InvariantCulture), "--n", n.ToString(CultureInfo.InvariantCulture),
                "--warmup", warmup.ToString(CultureInfo.InvariantCulture), "--runs", o.Runs.ToString(CultureInfo.InvariantCulture),
                "--latency-n", latencyN.ToString(CultureInfo.InvariantCulture), "--pid-dir", o.CeleryDirectory,
            })
                start.ArgumentList.Add(a);
            Log($"(celery {mode}) {n} tasks × {o.Runs} runs, warm-up {warmup}");
            using var process = Process.Start(start)!;
            var output = await process.StandardOutput.ReadToEndAsync();
            await process.WaitForExitAsync();
            if (process.ExitCode != 0)
                throw new InvalidOperationException($"bench/celery/driver.py --mode {mode} exited with {process.ExitCode}");
            var line = output.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Last();
            using var doc = JsonDocument.Parse(line);
            var root = doc.RootElement;
            foreach (var v in root.GetProperty("throughput").EnumerateArray())
                figure.Runs.Add(v.GetDouble());
            if (latency is not null)
            {
                foreach (var v in root.GetProperty("latency_p50_ms").EnumerateArray())
                    latency.Runs.Add(v.GetDouble());
                latency.Details["n_per_run"] = latencyN;
                latency.Details["p99_ms_per_run"] = JsonSerializer.Deserialize<double[]>(root.GetProperty("latency_p99_ms").GetRawText());
            }
            figure.Details["driver"] = JsonSerializer.Deserialize<Dictionary<string, object?>>(line);
            figure.Details["n"] = n;
        }
        finally
        {
            await admin.DeleteVirtualHostAsync(vhostName);
        }
    }
}
