using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using RunnerService.IntegrationTests.Infrastructure;
using RunnerService.TestSupport;
using Xunit.Abstractions;

namespace RunnerService.IntegrationTests;

/// <summary>
/// The short chaos run: the bench's chaos mode (bench/RunnerService.Bench/Chaos/, the same code as
/// `bash bench/soak.sh chaos`) against a broker of its own, which it restarts, and the shared PostgreSQL server.
/// Three replicas, 300 roots of sleep, cpu, marker, fib and fanout, one SIGKILL, one SIGTERM, one broker restart and a
/// 15 s partition of one replica; the run's history checker must find no violation.
/// </summary>
[Collection(BrokerCollection.Name)]
[Trait("Category", "Faults")]
public sealed class ChaosTests(PostgresFixture postgres, ITestOutputHelper output)
{
    static readonly TimeSpan Patience = TimeSpan.FromMinutes(8);

    static string BenchDll => Path.Combine(RepoPaths.Root, "bench", "RunnerService.Bench", "bin", RepoPaths.Configuration, "net10.0", "RunnerService.Bench.dll");

    /// <summary>The stock worker build the other tests run (the Native AOT one when it is there and current).</summary>
    static string WorkerExecutable => StockWorker.RunsAot ? StockWorker.AotPath : Path.Combine(RepoPaths.Root, "src", "WorkerProcess", "WorkerProcess", "bin", RepoPaths.Configuration, "net10.0", "WorkerProcess");

    [Fact]
    public async Task A_short_chaos_run_with_kills_a_broker_restart_and_a_partition_breaks_no_invariant_of_the_history()
    {
        // The run stops and starts this broker (its state kept): the shared one is not the test's to restart.
        await using var broker = await PrivateBroker.StartAsync(5842);
        output.WriteLine($"worker: {WorkerExecutable}");
        var sagas = await postgres.GetConnectionStringAsync();
        var run = Directory.CreateTempSubdirectory("runner-chaos-test-").FullName;
        // A private copy of the worker: every live process of this executable belongs to this run.
        var worker = Path.Combine(run, "worker");
        CopyDirectory(Path.GetDirectoryName(WorkerExecutable)!, worker);

        var start = new ProcessStartInfo("dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            WorkingDirectory = run,
        };
        foreach (var arg in (string[])[
            BenchDll, "chaos",
            "--count", "300", "--rate", "4", "--in-flight", "60",
            "--sigkills", "1", "--sigterms", "1", "--broker-restarts", "1", "--partitions", "1",
            "--partition-seconds", "15", "--fault-gap-seconds", "5", "--open-deadline-seconds", "120", "--timeout-min", "3",
            "--service-dll", RepoPaths.ServiceDll, "--worker", Path.Combine(worker, "WorkerProcess"),
            "--broker", broker.AmqpUri.ToString(), "--management", broker.ManagementUri.ToString(),
            "--rabbitmq-script", Path.Combine(RepoPaths.Root, "deploy", "local", "rabbitmq.sh"),
            "--sagas", sagas, "--saga-schema", postgres.NewSchema("chaos"), "--run-dir", Path.Combine(run, "history")])
        {
            start.ArgumentList.Add(arg);
        }
        foreach (var (key, value) in broker.ScriptEnvironment)
            start.Environment[key] = value;
        start.Environment["DOTNET_NOLOGO"] = "1";

        var lines = new ConcurrentQueue<string>();
        var watch = Stopwatch.StartNew();
        using var process = new Process { StartInfo = start };
        process.OutputDataReceived += (_, e) => { if (e.Data is not null) lines.Enqueue(e.Data); };
        process.ErrorDataReceived += (_, e) => { if (e.Data is not null) lines.Enqueue(e.Data); };
        process.Start();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        using (var timeout = new CancellationTokenSource(Patience))
        {
            try
            {
                await process.WaitForExitAsync(timeout.Token);
            }
            catch (OperationCanceledException)
            {
                // The bench, its replicas and their workers: the tree of the process this test started.
                process.Kill(entireProcessTree: true);
                await process.WaitForExitAsync();
            }
        }
        process.WaitForExit(); // the last output lines
        output.WriteLine($"chaos run: exit {process.ExitCode} after {watch.Elapsed.TotalSeconds:F0} s; history in {run}");
        foreach (var line in lines)
            output.WriteLine(line);

        var verdict = lines.Where(l => l.StartsWith("  VIOLATION", StringComparison.Ordinal) || l.StartsWith("RESULT", StringComparison.Ordinal)
            || l.StartsWith("violations:", StringComparison.Ordinal)).ToList();
        Assert.True(process.ExitCode == 0,
            $"the chaos run failed (exit {process.ExitCode} after {watch.Elapsed.TotalSeconds.ToString("F0", CultureInfo.InvariantCulture)} s; history kept in {run}):\n{string.Join('\n', verdict)}");
        Assert.Contains("RESULT: PASS (no violation)", lines);
        Directory.Delete(run, recursive: true);
    }

    static void CopyDirectory(string from, string to)
    {
        foreach (var directory in Directory.EnumerateDirectories(from, "*", SearchOption.AllDirectories))
            Directory.CreateDirectory(Path.Combine(to, Path.GetRelativePath(from, directory)));
        Directory.CreateDirectory(to);
        foreach (var file in Directory.EnumerateFiles(from, "*", SearchOption.AllDirectories))
            File.Copy(file, Path.Combine(to, Path.GetRelativePath(from, file)));
    }
}
