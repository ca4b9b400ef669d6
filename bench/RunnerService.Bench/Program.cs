using RunnerService.Bench;

if (args.Length > 0 && args[0] == "naive-consumer")
    return await NaiveBaseline.RunAsync(args);
if (args.Length > 0 && args[0] == "soak")
    return await Soak.RunAsync(args);
if (args.Length > 0 && args[0] == "chaos")
    return await RunnerService.Bench.Chaos.ChaosRun.RunAsync(args);

BenchOptions options;
try
{
    options = BenchOptions.Parse(args);
}
catch (HelpRequestedException)
{
    Console.WriteLine(BenchOptions.Usage);
    return 0;
}
catch (Exception ex) when (ex is ArgumentException or FormatException)
{
    Console.Error.WriteLine(ex.Message);
    Console.Error.WriteLine(BenchOptions.Usage);
    return 2;
}

foreach (var (what, path) in new[] { ("AOT worker (deploy/local/publish-aot-worker.sh)", options.AotWorkerPath), ("service", options.ServiceDllPath), ("JIT worker", options.JitWorkerDllPath) })
{
    if (!File.Exists(path))
    {
        Console.Error.WriteLine($"missing {what}: {path}");
        return 2;
    }
}

var report = new Report(options);
using var admin = new BrokerAdmin(options.Broker, options.Management);
var scenarios = new Scenarios(options, admin, report);
var steps = new (string Id, Func<Task> Run)[]
{
    ("e", scenarios.SpawnAsync),
    ("rtt", new BrokerRoundTrip(options, admin, report).RunAsync),
    ("f", scenarios.MemoryAsync),
    ("baseline", scenarios.BaselineAsync),
    ("a", scenarios.ThroughputAsync),
    ("reuse", scenarios.ThroughputReuseAsync),
    ("celery", new CeleryScenario(options, admin, report).RunAsync),
    ("jit", scenarios.ThroughputJitWorkerAsync),
    ("b", scenarios.LatencyAsync),
    ("bwarm", scenarios.LatencyWarmAsync),
    ("c", scenarios.WaitResumeAsync),
    ("d", () => scenarios.CpuBoundAsync(baseline: false)),
    ("demo", scenarios.DemoSleepAsync),
    ("baseline", () => scenarios.CpuBoundAsync(baseline: true)),
    ("g", scenarios.PeakRssAsync),
};
Console.Error.WriteLine($"[bench] {Environment.ProcessorCount} cores, {ProcStats.CpuModel()}, loadavg {ProcStats.LoadAverage()}; runs {options.Runs}; logs in {ChildService.LogDirectory}");
foreach (var (id, run) in steps)
{
    if (!options.Wants(id))
        continue;
    try
    {
        await run();
    }
    catch (Exception ex)
    {
        Console.Error.WriteLine($"[bench] scenario {id} failed: {ex}");
        report.Error(id, ex);
    }
    // Partial results survive a later failure or an interrupted run.
    await report.WriteJsonAsync(options.OutputPath);
}

var table = report.Table();
Console.WriteLine(table);
await report.WriteJsonAsync(options.OutputPath);
Console.WriteLine($"JSON: {options.OutputPath}");
return 0;
