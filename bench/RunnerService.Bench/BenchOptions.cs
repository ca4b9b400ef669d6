using System.Globalization;

namespace RunnerService.Bench;

/// <summary>Command-line settings. Every size has a flag so a quick check can shrink it; defaults are the sizes.</summary>
sealed class BenchOptions
{
    public int Runs { get; set; } = 5;
    public int Slots { get; set; } = 2;

    /// <summary>(a) trivial echo invocations per throughput run.</summary>
    public int ThroughputN { get; set; } = 2000;

    /// <summary>(a) for the naive baseline (it runs about 20/s, so 2,000 would take minutes per run).</summary>
    public int BaselineThroughputN { get; set; } = 200;

    /// <summary>(a) for the service driving the JIT worker (attribution: service design vs. AOT worker).</summary>
    public int JitWorkerThroughputN { get; set; } = 200;

    /// <summary>(b) sequential invocations per latency run.</summary>
    public int LatencyN { get; set; } = 200;
    public int BaselineLatencyN { get; set; } = 40;

    /// <summary>(rtt) one-at-a-time broker round trips (ping → pong) per run.</summary>
    public int RoundTripN { get; set; } = 300;

    /// <summary>(c) wait/resume samples per run.</summary>
    public int ResumeN { get; set; } = 40;

    /// <summary>(d) CPU-bound invocations and their length.</summary>
    public int CpuN { get; set; } = 16;
    public int CpuMs { get; set; } = 200;

    /// <summary>(e) spawns per run of the AOT worker, and of the JIT worker.</summary>
    public int SpawnN { get; set; } = 200;
    public int JitSpawnN { get; set; } = 20;

    /// <summary>(f) workers measured per run.</summary>
    public int MemoryN { get; set; } = 5;

    /// <summary>(g) sizes and runs.</summary>
    public int Queued { get; set; } = 10_000;
    public int Paused { get; set; } = 1_000;
    public int PeakRuns { get; set; } = 5;
    public int PeakSlots { get; set; } = 2;

    /// <summary>Celery in the same run (issue 14, item 3): off unless --with-celery (bench/run.sh then installs it and starts redis).</summary>
    public bool WithCelery { get; set; }

    /// <summary>Celery tasks per throughput run: defaults and acks_late (null = ThroughputN), and the fresh-process configuration.</summary>
    public int? CeleryN { get; set; }
    public int? CeleryFreshN { get; set; }
    public int CeleryWarmup { get; set; } = 300;

    /// <summary>Warm-up of the max-tasks-per-child=1 worker: a process is used once, so this only warms its parent and the client.</summary>
    public int CeleryFreshWarmup { get; set; } = 50;

    /// <summary>One-at-a-time publish→result samples per run for Celery acks_late (0 = skip).</summary>
    public int CeleryLatencyN { get; set; } = 200;

    public string CeleryPython { get; set; } = "/usr/bin/python3";
    public string CeleryBackend { get; set; } = Environment.GetEnvironmentVariable("BENCH_CELERY_BACKEND") ?? "redis://127.0.0.1:6399/0";
    public string CeleryDirectory { get; set; } = Environment.GetEnvironmentVariable("BENCH_CELERY_DIR") ?? "/tmp/bench-celery";

    public int CeleryThroughputN => CeleryN ?? ThroughputN;
    public int CeleryFreshThroughputN => CeleryFreshN ?? ThroughputN;

    /// <summary>Scenarios to run (a..g, rtt, demo, baseline, jit, celery); empty = all (celery only with --with-celery).</summary>
    public HashSet<string> Only { get; } = new(StringComparer.OrdinalIgnoreCase);

    public string RepoRoot { get; set; } = FindRepoRoot();
    public string? AotWorker { get; set; }
    public string? ServiceDll { get; set; }
    public string? JitWorkerDll { get; set; }
    public string? SpawnFloorTool { get; set; }
    public string? Output { get; set; }
    public string? BrokerPidFile { get; set; } = Environment.GetEnvironmentVariable("BENCH_BROKER_PID_FILE");
    public Uri Broker { get; set; } = new(Environment.GetEnvironmentVariable("RABBITMQ_URL") ?? "amqp://guest:guest@127.0.0.1:5752/");
    public Uri Management { get; set; } = new(Environment.GetEnvironmentVariable("RABBITMQ_MANAGEMENT_URL") ?? "http://guest:guest@127.0.0.1:15752/");

    /// <summary>Extra environment for every RunnerService the bench starts (experiments: --service-env K=V).</summary>
    public Dictionary<string, string> ServiceEnvironment { get; } = [];

    /// <summary>When set: `perf record -a -g` over the first measured (a) run, written to this file (and a.reuse to FILE.reuse).</summary>
    public string? PerfRecord { get; set; }

    public string AotWorkerPath => AotWorker ?? Path.Combine(RepoRoot, "artifacts", "aot-worker", "WorkerProcess");
    public string ServiceDllPath => ServiceDll ?? Path.Combine(RepoRoot, "src", "RunnerService", "bin", "Release", "net10.0", "RunnerService.dll");
    public string JitWorkerDllPath => JitWorkerDll ?? Path.Combine(RepoRoot, "src", "WorkerProcess", "WorkerProcess", "bin", "Release", "net10.0", "WorkerProcess.dll");

    /// <summary>The JIT worker's apphost (what the service starts by default when no WorkerCommand is set).</summary>
    public string JitWorkerAppHost => Path.Combine(Path.GetDirectoryName(JitWorkerDllPath)!, "WorkerProcess");

    public string SpawnFloorToolPath => SpawnFloorTool ?? Path.Combine(RepoRoot, "artifacts", "bench", "spawnfloor");
    public string OutputPath => Output ?? Path.Combine(RepoRoot, "bench", "results", "latest.json");

    public bool Wants(string scenario) =>
        (scenario != "celery" || WithCelery) && (Only.Count == 0 || Only.Contains(scenario));

    /// <summary>What --only ratios runs: Celery and every scenario a row of issue 14's headline is computed from.</summary>
    public static readonly string[] RatioScenarios = ["a", "reuse", "e", "celery", "b", "rtt", "d", "demo"];

    public static BenchOptions Parse(string[] args)
    {
        var o = new BenchOptions();
        for (var i = 0; i < args.Length; i++)
        {
            var arg = args[i];
            string Next() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{arg} needs a value");
            int NextInt() => int.Parse(Next(), CultureInfo.InvariantCulture);
            switch (arg)
            {
                case "--runs": o.Runs = NextInt(); break;
                case "--slots": o.Slots = NextInt(); break;
                case "--n": o.ThroughputN = NextInt(); break;
                case "--baseline-n": o.BaselineThroughputN = NextInt(); break;
                case "--jit-n": o.JitWorkerThroughputN = NextInt(); break;
                case "--latency-n": o.LatencyN = NextInt(); break;
                case "--baseline-latency-n": o.BaselineLatencyN = NextInt(); break;
                case "--rtt-n": o.RoundTripN = NextInt(); break;
                case "--resume-n": o.ResumeN = NextInt(); break;
                case "--cpu-n": o.CpuN = NextInt(); break;
                case "--cpu-ms": o.CpuMs = NextInt(); break;
                case "--spawn-n": o.SpawnN = NextInt(); break;
                case "--jit-spawn-n": o.JitSpawnN = NextInt(); break;
                case "--memory-n": o.MemoryN = NextInt(); break;
                case "--queued": o.Queued = NextInt(); break;
                case "--paused": o.Paused = NextInt(); break;
                case "--peak-runs": o.PeakRuns = NextInt(); break;
                case "--peak-slots": o.PeakSlots = NextInt(); break;
                case "--only":
                    foreach (var s in Next().Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
                    {
                        // "ratios": Celery plus exactly our figures issue 14's headline needs: a (fresh, service CPU), reuse,
                        // e (floors, start p50), b and rtt (latency ÷ its floor), d and demo (÷ ideal). The four added with
                        // the latency, demo and d rows take about two minutes together, against Celery's many.
                        if (s.Equals("ratios", StringComparison.OrdinalIgnoreCase))
                            o.Only.UnionWith(RatioScenarios);
                        else
                            o.Only.Add(s);
                    }
                    break;
                case "--with-celery": o.WithCelery = true; break;
                case "--celery-n": o.CeleryN = NextInt(); break;
                case "--celery-fresh-n": o.CeleryFreshN = NextInt(); break;
                case "--celery-warmup": o.CeleryWarmup = NextInt(); break;
                case "--celery-fresh-warmup": o.CeleryFreshWarmup = NextInt(); break;
                case "--celery-latency-n": o.CeleryLatencyN = NextInt(); break;
                case "--celery-python": o.CeleryPython = Next(); break;
                case "--celery-backend": o.CeleryBackend = Next(); break;
                case "--skip-g":
                    foreach (var s in new[] { "a", "reuse", "b", "bwarm", "c", "d", "e", "f", "rtt", "demo", "baseline", "jit", "celery" })
                        o.Only.Add(s);
                    break;
                case "--quick":
                    // A smoke run: every scenario, small sizes, 2 runs. Not for RESULTS.md.
                    o.Runs = 2; o.ThroughputN = 200; o.BaselineThroughputN = 30; o.JitWorkerThroughputN = 30; o.LatencyN = 30;
                    o.RoundTripN = 50; o.BaselineLatencyN = 10; o.ResumeN = 10; o.SpawnN = 50; o.JitSpawnN = 5; o.MemoryN = 3;
                    o.Queued = 1000; o.Paused = 100; o.PeakRuns = 1;
                    o.CeleryN = 200; o.CeleryFreshN = 20; o.CeleryWarmup = 40; o.CeleryFreshWarmup = 4; o.CeleryLatencyN = 20;
                    break;
                case "--repo": o.RepoRoot = Next(); break;
                case "--aot-worker": o.AotWorker = Next(); break;
                case "--service-dll": o.ServiceDll = Next(); break;
                case "--jit-worker-dll": o.JitWorkerDll = Next(); break;
                case "--spawnfloor": o.SpawnFloorTool = Next(); break;
                case "--out": o.Output = Next(); break;
                case "--broker": o.Broker = new Uri(Next()); break;
                case "--management": o.Management = new Uri(Next()); break;
                case "--broker-pid-file": o.BrokerPidFile = Next(); break;
                case "--perf-record": o.PerfRecord = Next(); break;
                case "--service-env":
                    var kv = Next();
                    var eq = kv.IndexOf('=', StringComparison.Ordinal);
                    if (eq <= 0)
                        throw new ArgumentException("--service-env needs NAME=VALUE");
                    o.ServiceEnvironment[kv[..eq]] = kv[(eq + 1)..];
                    break;
                case "-h" or "--help":
                    throw new HelpRequestedException();
                default:
                    throw new ArgumentException($"unknown argument '{arg}' (try --help)");
            }
        }
        if (o.Runs < 1)
            throw new ArgumentException("--runs must be at least 1");
        return o;
    }

    public const string Usage = """
        RunnerService.Bench — end-to-end benchmark (run it through bench/run.sh, which starts the broker).

          --runs R              runs per figure (default 5; medians with min–max over R)
          --n N                 (a) echo invocations per throughput run (default 2000)
          --baseline-n N        (a) for the naive baseline (default 200)
          --jit-n N             (a) for the service driving the JIT worker (default 200)
          --latency-n N         (b) sequential invocations per run (default 200; baseline: --baseline-latency-n, 40)
          --rtt-n N             (rtt) one-at-a-time broker round trips (ping → pong) per run (default 300)
          --resume-n N          (c) wait/resume samples per run (default 40)
          --cpu-n N --cpu-ms M  (d) N x cpu{ms:M} on the slots (default 16 x 200)
          --spawn-n N           (e) AOT spawns per run (default 200; JIT: --jit-spawn-n, 20)
          --memory-n N          (f) workers measured per run (default 5)
          --queued N --paused N (g) sizes (default 10000 / 1000); --peak-runs R (default 5), --peak-slots S (default 2)
          --slots S             slots of the service and the baseline (default 2)
          --only a,b,...        scenarios: a reuse b bwarm c d e f g rtt demo baseline jit celery (default: all); --skip-g = all
                                but g; ratios = a,reuse,e,celery,b,rtt,d,demo (Celery and every figure of issue 14's headline)
                                rtt = broker round trip (ping → pong), demo = 50 × sleep 100 ms on the slots ÷ ideal
          --with-celery         also run Celery (bench/celery/) on the bench's broker, result backend redis: defaults,
                                acks_late + prefetch 1, and that with --max-tasks-per-child=1; prints the ratios first.
                                bench/run.sh installs python3-celery and redis-server and starts redis on 6399.
          --celery-n N          tasks per Celery throughput run (default: --n); --celery-fresh-n N for
                                max-tasks-per-child=1 (default: --n; ~4-9 tasks/s on 2 cores, so 2,000 take minutes)
          --celery-warmup N     warm-up tasks (default 300; --celery-fresh-warmup, 50); --celery-latency-n N one-at-a-time
                                samples per run for acks_late (default 200, 0 = skip)
          --celery-backend URL  result backend (default $BENCH_CELERY_BACKEND or redis://127.0.0.1:6399/0; rpc:// works)
          --celery-python PATH  the Python with Debian's celery (default /usr/bin/python3)
          --quick               smoke sizes (2 runs, small N) — not for published numbers
          --out FILE            JSON output (default bench/results/latest.json)
          --perf-record FILE    perf record -a -g over the first measured (a) run (service with perf map); FILE.reuse: the same for a.reuse
          --service-env K=V     extra environment for the RunnerService processes (repeatable; for experiments)
          --broker URL --management URL --broker-pid-file FILE (default from RABBITMQ_URL, RABBITMQ_MANAGEMENT_URL, BENCH_BROKER_PID_FILE)
          --aot-worker PATH --service-dll PATH --jit-worker-dll PATH --spawnfloor PATH --repo DIR

          naive-consumer --broker URL --slots S --worker-dll PATH   (internal: the baseline service process)
        """;

    static string FindRepoRoot()
    {
        foreach (var start in new[] { Environment.CurrentDirectory, AppContext.BaseDirectory })
        {
            for (var dir = new DirectoryInfo(start); dir is not null; dir = dir.Parent)
            {
                if (File.Exists(Path.Combine(dir.FullName, "RunnerService.sln")))
                    return dir.FullName;
            }
        }
        return Environment.CurrentDirectory;
    }
}

sealed class HelpRequestedException : Exception;
