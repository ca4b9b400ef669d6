using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;
using MassTransit;
using RunnerService.Contracts;
using RunnerService.Contracts.Client;

namespace RunnerService.Bench;

/// <summary>
/// Soak test (issue 4, item 11), `RunnerService.Bench.dll soak ...`, normally through `bash bench/soak.sh`.
/// One RunnerService process (fixed instance id, so a restart keeps its identity), N mixed invocations, the service
/// SIGKILLed and restarted at random moments; then it checks that every invocation completed with the right status,
/// that no invocation ran twice at the same time, and that no worker outlived its service.
/// </summary>
static class Soak
{
    public const string Usage = """
        soak mode: RunnerService.Bench.dll soak [options]
          --count N            top-level invocations to submit (default 10000)
          --kills K            SIGKILL + restart the service K times at random moments (default 5)
          --slots S            Runner__Slots (default 4)
          --timeout-min M      give up waiting for completions after M minutes (default 20)
          --seed X             random seed (default: time based, printed)
          --service-dll PATH   RunnerService.dll to run (required)
          --worker PATH        worker executable (Runner__WorkerCommand; required)
          --crash-attempts A   MaxAttempts of the crash invocations (default 2: one retry, then Failed)
          --fib-n N            n of the nested fib invocations (default 4: 9 invocations, 4 of them wait; 1,000 trees
                               of fib(5) keep ~9,000 paused workers, beyond a 20,000 open-file limit's room)
          --broker URL         AMQP URL (default $RABBITMQ_URL)
          --management URL     management URL (default $RABBITMQ_MANAGEMENT_URL)
          --log-dir DIR        service logs (default /tmp/runner-soak-logs)
        """;

    const string InstanceId = "soak-runner";

    static long Fib(int n) => n < 2 ? n : Fib(n - 1) + Fib(n - 2);

    sealed class Options
    {
        public int Count = 10_000;
        public int Kills = 5;
        public int Slots = 4;
        public double TimeoutMinutes = 20;
        public int Seed = Environment.TickCount;
        public string? ServiceDll;
        public string? Worker;
        public int CrashAttempts = 2;
        public int FibN = 4;
        public Uri Broker = new(Environment.GetEnvironmentVariable("RABBITMQ_URL") ?? "amqp://guest:guest@127.0.0.1:5822/");
        public Uri Management = new(Environment.GetEnvironmentVariable("RABBITMQ_MANAGEMENT_URL") ?? "http://guest:guest@127.0.0.1:15822/");
        public string LogDir = Path.Combine(Path.GetTempPath(), "runner-soak-logs");

        public static Options Parse(string[] args)
        {
            var o = new Options();
            for (var i = 1; i < args.Length; i++)
            {
                string Next() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{args[i]} needs a value");
                int Int() => int.Parse(Next(), CultureInfo.InvariantCulture);
                switch (args[i])
                {
                    case "--count": o.Count = Int(); break;
                    case "--kills": o.Kills = Int(); break;
                    case "--slots": o.Slots = Int(); break;
                    case "--timeout-min": o.TimeoutMinutes = double.Parse(Next(), CultureInfo.InvariantCulture); break;
                    case "--seed": o.Seed = Int(); break;
                    case "--service-dll": o.ServiceDll = Path.GetFullPath(Next()); break;
                    case "--worker": o.Worker = Path.GetFullPath(Next()); break;
                    case "--crash-attempts": o.CrashAttempts = Int(); break;
                    case "--fib-n": o.FibN = Int(); break;
                    case "--broker": o.Broker = new Uri(Next()); break;
                    case "--management": o.Management = new Uri(Next()); break;
                    case "--log-dir": o.LogDir = Path.GetFullPath(Next()); break;
                    case "-h" or "--help": throw new HelpRequestedException();
                    default: throw new ArgumentException($"unknown soak option {args[i]}");
                }
            }
            if (o.ServiceDll is null || !File.Exists(o.ServiceDll))
                throw new ArgumentException($"--service-dll missing or not found: {o.ServiceDll}");
            if (o.Worker is null || !File.Exists(o.Worker))
                throw new ArgumentException($"--worker missing or not found: {o.Worker}");
            return o;
        }
    }

    enum Kind { Echo, Sleep, Fail, Crash, Fib }

    sealed record StartedRecord(int Pid, int Attempt, DateTimeOffset StartedAt, DateTime ReceivedAt, string Runner);

    /// <summary>Everything seen about one invocation id (top-level or a fib sub-invocation).</summary>
    sealed class Track
    {
        public Kind? Kind;              // set for the ones the soak submitted
        public string TaskName = "";
        public bool Submitted;
        public readonly List<StartedRecord> Started = [];
        public readonly List<InvocationCompleted> Completed = [];
    }

    sealed record ConcurrentDuplicate(Guid Id, string Task, StartedRecord First, StartedRecord Second, string How);

    static readonly ConcurrentDictionary<Guid, Track> Tracks = new();
    static readonly ConcurrentBag<ConcurrentDuplicate> Concurrent = [];
    static ProcWatch Watch = null!;
    static int _topCompleted;
    static int _totalStarted, _totalCompleted;

    static void Log(string message) =>
        Console.Error.WriteLine($"[soak {DateTime.UtcNow:HH:mm:ss.fff}] {message}");

    public static async Task<int> RunAsync(string[] args)
    {
        Options o;
        try
        {
            o = Options.Parse(args);
        }
        catch (HelpRequestedException)
        {
            Console.WriteLine(Usage);
            return 0;
        }
        catch (Exception ex) when (ex is ArgumentException or FormatException)
        {
            Console.Error.WriteLine(ex.Message);
            Console.Error.WriteLine(Usage);
            return 2;
        }

        var rng = new Random(o.Seed);
        Watch = new ProcWatch(o.Worker!);
        ChildService.LogDirectory = o.LogDir;
        if (Directory.Exists(o.LogDir))
        {
            foreach (var f in Directory.EnumerateFiles(o.LogDir, "soak-runner-*.log"))
                File.Delete(f);
        }
        Log($"seed {o.Seed}; count {o.Count}; kills {o.Kills}; slots {o.Slots}; worker {o.Worker}; logs {o.LogDir}");

        var leftovers = Watch.ScanWorkers();
        if (leftovers.Count > 0)
            Log($"WARNING: {leftovers.Count} worker processes of this executable exist before the start: {string.Join(' ', leftovers.Select(w => w.Pid))}");

        using var admin = new BrokerAdmin(o.Broker, o.Management);
        var vhostName = $"soak-{DateTime.UtcNow:HHmmss}";
        var vhost = await admin.CreateVirtualHostAsync(vhostName);
        var state = Directory.CreateTempSubdirectory("runner-soak-").FullName;
        var httpPort = ChildService.FreePort();
        var benchOptions = new BenchOptions { ServiceDll = o.ServiceDll };
        var serviceEnv = new Dictionary<string, string>
        {
            ["Runner__InstanceId"] = InstanceId,
            ["Runner__StaleAfter"] = "00:00:10",
            ["Runner__ShutdownGrace"] = "00:00:05",
        };
        var starts = 0;
        async Task<ChildService> StartService()
        {
            starts++;
            var sw = Stopwatch.StartNew();
            var s = await ChildService.StartRunnerAsync(benchOptions, $"{InstanceId}-{starts}", vhost, o.Slots, o.Worker!, state, serviceEnv, httpPort);
            Log($"service start #{starts}: pid {s.Pid}, ready after {sw.ElapsedMilliseconds} ms, log {s.LogFile}");
            return s;
        }

        // Our own bus: the public client to submit, and a queue that records every Started and Completed event.
        var bus = Bus.Factory.CreateUsingRabbitMq(cfg =>
        {
            cfg.Host(vhost);
            cfg.ReceiveEndpoint(new TemporaryEndpointDefinition("soak-events"), KebabCaseEndpointNameFormatter.Instance, e =>
            {
                e.PrefetchCount = 512;
                e.ConcurrentMessageLimit = 1;   // one at a time: Started/Completed of an id are handled in order of arrival
                e.Handler<InvocationStarted>(c => { OnStarted(c.Message); return Task.CompletedTask; });
                e.Handler<InvocationCompleted>(c => { OnCompleted(c.Message); return Task.CompletedTask; });
            });
        });
        using (var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60)))
            await bus.StartAsync(cts.Token);
        var client = new InvocationClient(bus);

        var service = await StartService();
        using var pollStop = new CancellationTokenSource();
        var poller = Task.Run(() => Watch.PollAsync(pollStop.Token));

        // The mix.
        var plan = new (Guid Id, Kind Kind, RunInvocation Message)[o.Count];
        for (var i = 0; i < o.Count; i++)
        {
            var roll = rng.Next(100);
            var kind = roll < 60 ? Kind.Echo : roll < 75 ? Kind.Sleep : roll < 85 ? Kind.Fail : roll < 90 ? Kind.Crash : Kind.Fib;
            var id = NewId.NextGuid();
            var (task, arguments) = kind switch
            {
                Kind.Echo => ("echo", $"{{\"i\":{i}}}"),
                Kind.Sleep => ("sleep", $"{{\"ms\":{rng.Next(50, 501)}}}"),
                Kind.Fail => ("fail", "{\"message\":\"soak failure\"}"),
                Kind.Crash => ("crash", "{\"exitCode\":3}"),
                _ => ("fib", $"{{\"n\":{o.FibN}}}"),
            };
            var message = new RunInvocation
            {
                InvocationId = id,
                TaskName = task,
                Arguments = JsonDocument.Parse(arguments).RootElement.Clone(),
                MaxAttempts = kind == Kind.Crash ? o.CrashAttempts : 1,
            };
            plan[i] = (id, kind, message);
            var t = Tracks.GetOrAdd(id, _ => new Track());
            lock (t)
            {
                t.Kind = kind;
                t.TaskName = task;
                t.Submitted = true;
            }
        }

        var wall = Stopwatch.StartNew();
        var submitted = 0;
        var submitter = Task.Run(async () =>
        {
            await Parallel.ForEachAsync(plan, new ParallelOptions { MaxDegreeOfParallelism = 32 }, async (p, ct) =>
            {
                await client.SubmitAsync(p.Message, ct);
                Interlocked.Increment(ref submitted);
            });
            Log($"submitted {submitted} in {wall.Elapsed.TotalSeconds:F1} s");
        });

        // Kill moments: random points of progress (share of top-level completions), each followed by a random delay.
        // One kill in each of K equal stretches of 5%..90% progress, at a random point of its stretch.
        var killAt = Enumerable.Range(0, o.Kills).Select(k => 0.05 + 0.85 * (k + rng.NextDouble()) / Math.Max(1, o.Kills)).ToArray();
        var kills = new List<string>();
        var orphanEvents = new List<string>();
        var orphansAfterKills = 0;
        var deadline = DateTime.UtcNow + TimeSpan.FromMinutes(o.TimeoutMinutes);
        var nextKill = 0;
        var lastReport = Stopwatch.StartNew();
        while (DateTime.UtcNow < deadline)
        {
            var done = Volatile.Read(ref _topCompleted);
            if (done >= o.Count && submitter.IsCompleted)
                break;
            if (nextKill < killAt.Length && done >= killAt[nextKill] * o.Count)
            {
                await Task.Delay(rng.Next(0, 1500));
                var children = service.ChildPids();
                var paused = children.Count(p => ProcWatch.State(p) == "T");
                var at = Volatile.Read(ref _topCompleted);
                Log($"KILL #{nextKill + 1}: SIGKILL service pid {service.Pid} at {at}/{o.Count} top-level completed, {children.Count} live workers ({paused} paused): {string.Join(' ', children)}");
                await service.KillAsync();
                var killedAt = Stopwatch.StartNew();
                await Task.Delay(2000);
                var survivors = Watch.ScanWorkers();
                var reported = survivors.Count(w => Watch.WasReported(w.Pid));
                orphansAfterKills += survivors.Count;
                var line = $"kill #{nextKill + 1} at {at}/{o.Count}: {children.Count} workers ({paused} paused) under the killed service; {survivors.Count} worker processes alive 2 s later ({reported} of them reported in Started)";
                kills.Add(line);
                if (survivors.Count > 0)
                {
                    var detail = string.Join("; ", survivors.Select(w => $"pid {w.Pid} ppid {w.PPid} state {w.State}"));
                    orphanEvents.Add($"after kill #{nextKill + 1}: {detail}");
                    Log($"ORPHANS after kill #{nextKill + 1}: {detail}");
                }
                await service.DisposeAsync();
                // A random extra downtime, 0-3 s, before the restart (same environment, same instance id, same port).
                await Task.Delay(rng.Next(0, 3000));
                service = await StartService();
                Log($"restarted {killedAt.Elapsed.TotalSeconds:F1} s after the kill");
                nextKill++;
                continue;
            }
            if (lastReport.Elapsed > TimeSpan.FromSeconds(10))
            {
                lastReport.Restart();
                Log($"progress: submitted {Volatile.Read(ref submitted)}, top-level completed {done}/{o.Count}, events started {Volatile.Read(ref _totalStarted)} completed {Volatile.Read(ref _totalCompleted)}, service pid {service.Pid} workers {service.ChildPids().Count}");
            }
            if (service.HasExited)
            {
                Log($"WARNING: the service exited on its own; log tail:\n{service.Tail()}");
                kills.Add("the service exited on its own (not killed by the soak); restarted");
                await service.DisposeAsync();
                service = await StartService();
            }
            await Task.Delay(100);
        }
        var timedOut = Volatile.Read(ref _topCompleted) < o.Count;
        var elapsed = wall.Elapsed;
        Log(timedOut ? $"TIMEOUT after {elapsed.TotalMinutes:F1} min" : $"all top-level invocations completed after {elapsed.TotalSeconds:F1} s");

        // Sub-invocations (fib children) and late duplicates: wait until every started id has a completion (max 60 s),
        // then 5 s more for late duplicate events.
        var settle = Stopwatch.StartNew();
        while (settle.Elapsed < TimeSpan.FromSeconds(60) && Tracks.Values.Any(t => { lock (t) return t.Started.Count > 0 && t.Completed.Count == 0; }))
            await Task.Delay(200);
        await Task.Delay(5000);

        // Final orphan checks: workers not under the live service, then everything after a graceful stop.
        var finalWorkers = Watch.ScanWorkers();
        var underService = service.ChildPids().ToHashSet();
        var finalStrays = finalWorkers.Where(w => !underService.Contains(w.Pid)).ToList();
        var finalUnder = finalWorkers.Count(w => underService.Contains(w.Pid));
        var servicePid = service.Pid;
        await service.StopAsync(TimeSpan.FromSeconds(30));
        await service.DisposeAsync();
        await Task.Delay(2000);
        var afterStop = Watch.ScanWorkers();
        pollStop.Cancel();
        await poller;

        try
        {
            await client.DisposeAsync();
            using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));
            await bus.StopAsync(cts.Token);
        }
        catch (Exception ex) when (ex is OperationCanceledException or TimeoutException)
        {
        }
        await admin.DeleteVirtualHostAsync(vhostName);
        try
        {
            Directory.Delete(state, recursive: true);
        }
        catch (IOException)
        {
        }

        // ---- Summary ----
        var top = Tracks.Values.Where(t => t.Submitted).ToList();
        var subs = Tracks.Values.Where(t => !t.Submitted).ToList();
        var missing = top.Where(t => t.Completed.Count == 0).ToList();
        var subMissing = subs.Where(t => t.Started.Count > 0 && t.Completed.Count == 0).ToList();
        var duplicateCompletions = Tracks.Values.Where(t => t.Completed.Count > 1).ToList();
        var rerunStarts = Tracks.Values.Count(t => t.Started.Select(s => s.Pid).Distinct().Count() > 1);
        var wrong = new List<string>();
        var conflicting = new List<string>();
        foreach (var t in top.Where(t => t.Completed.Count > 0))
        {
            var expected = t.Kind is Kind.Fail or Kind.Crash ? InvocationStatus.Failed : InvocationStatus.Succeeded;
            foreach (var c in t.Completed)
            {
                if (c.Status != expected)
                    wrong.Add($"{t.TaskName} {c.InvocationId}: {c.Status} (expected {expected}) attempt {c.Attempt} error {c.Error}");
                else if (t.Kind == Kind.Fib && (c.Result is not { ValueKind: JsonValueKind.Number } r || r.GetInt64() != Fib(o.FibN)))
                    wrong.Add($"fib {c.InvocationId}: result {c.Result} (expected {Fib(o.FibN)})");
            }
            if (t.Completed.Select(c => c.Status).Distinct().Count() > 1)
                conflicting.Add($"{t.TaskName} {t.Completed[0].InvocationId}: {string.Join(", ", t.Completed.Select(c => $"{c.Status}#{c.Attempt}"))}");
        }

        var sb = new StringBuilder();
        sb.AppendLine("==== soak summary ====");
        sb.AppendLine(CultureInfo.InvariantCulture, $"seed {o.Seed}; slots {o.Slots}; kills planned {o.Kills}, done {nextKill}; service starts {starts}; elapsed {elapsed.TotalSeconds:F0} s{(timedOut ? " (TIMED OUT)" : "")}");
        sb.AppendLine(CultureInfo.InvariantCulture, $"submitted: {submitted} ({string.Join(", ", top.GroupBy(t => t.TaskName).OrderBy(g => g.Key).Select(g => $"{g.Key} {g.Count()}"))})");
        sb.AppendLine(CultureInfo.InvariantCulture, $"completed (top-level, first completion): {top.Count(t => t.Completed.Count > 0)}: {string.Join(", ", top.Where(t => t.Completed.Count > 0).GroupBy(t => t.Completed[0].Status).OrderBy(g => g.Key).Select(g => $"{g.Key} {g.Count()}"))}");
        foreach (var g in top.Where(t => t.Completed.Count > 0).GroupBy(t => t.TaskName).OrderBy(g => g.Key))
        {
            var byStatus = string.Join(", ", g.GroupBy(t => (t.Completed[0].Status, t.Completed[0].Error?.Type)).OrderBy(x => x.Key.Status)
                .Select(x => $"{x.Key.Status}{(x.Key.Type is null ? "" : "/" + x.Key.Type)} {x.Count()}"));
            sb.AppendLine(CultureInfo.InvariantCulture, $"  {g.Key,-6} {byStatus}");
        }
        sb.AppendLine(CultureInfo.InvariantCulture, $"sub-invocations (fib children): started {subs.Count(t => t.Started.Count > 0)}, completed {subs.Count(t => t.Completed.Count > 0)}: {string.Join(", ", subs.Where(t => t.Completed.Count > 0).GroupBy(t => t.Completed[0].Status).Select(g => $"{g.Key} {g.Count()}"))}");
        sb.AppendLine(CultureInfo.InvariantCulture, $"events: Started {_totalStarted}, Completed {_totalCompleted}; attempts > 1 seen on {Tracks.Values.Count(t => t.Started.Any(s => s.Attempt > 1))} invocations");
        sb.AppendLine(CultureInfo.InvariantCulture, $"missing (submitted, no completion): {missing.Count}");
        sb.AppendLine(CultureInfo.InvariantCulture, $"missing sub-invocations (started, no completion): {subMissing.Count}");
        sb.AppendLine(CultureInfo.InvariantCulture, $"duplicate completions = sequential re-runs (not a failure): {duplicateCompletions.Count} invocations ({duplicateCompletions.Count(t => t.Submitted)} top-level, {duplicateCompletions.Count(t => !t.Submitted)} sub); invocations started in more than one process: {rerunStarts}");
        sb.AppendLine(CultureInfo.InvariantCulture, $"conflicting completions (same id, different statuses): {conflicting.Count}");
        sb.AppendLine(CultureInfo.InvariantCulture, $"wrong final status: {wrong.Count}");
        sb.AppendLine(CultureInfo.InvariantCulture, $"concurrent duplicates: {Concurrent.Count}");
        sb.AppendLine(CultureInfo.InvariantCulture, $"orphans after kills (worker processes alive 2 s after a SIGKILL): {orphansAfterKills}");
        sb.AppendLine(CultureInfo.InvariantCulture, $"final orphans: {finalStrays.Count} not under the live service (pid {servicePid}, which had {finalUnder} workers left); {afterStop.Count} alive 2 s after its SIGTERM stop");
        foreach (var k in kills)
            sb.AppendLine("  " + k);
        foreach (var e in orphanEvents)
            sb.AppendLine("  ORPHANS " + e);
        foreach (var d in Concurrent.Take(20))
            sb.AppendLine(CultureInfo.InvariantCulture, $"  CONCURRENT {d.Task} {d.Id}: pid {d.First.Pid} (attempt {d.First.Attempt}, {d.First.Runner}, started {d.First.StartedAt:HH:mm:ss.fff}) and pid {d.Second.Pid} (attempt {d.Second.Attempt}, {d.Second.Runner}, started {d.Second.StartedAt:HH:mm:ss.fff}): {d.How}");
        foreach (var t in missing.Take(20))
            sb.AppendLine(CultureInfo.InvariantCulture, $"  MISSING {t.TaskName} {Tracks.First(kv => kv.Value == t).Key}: started {string.Join(", ", t.Started.Select(s => $"pid {s.Pid} attempt {s.Attempt} at {s.StartedAt:HH:mm:ss.fff}"))}");
        foreach (var t in subMissing.Take(10))
            sb.AppendLine(CultureInfo.InvariantCulture, $"  MISSING-SUB {t.TaskName} {Tracks.First(kv => kv.Value == t).Key}: started {string.Join(", ", t.Started.Select(s => $"pid {s.Pid} attempt {s.Attempt} at {s.StartedAt:HH:mm:ss.fff}"))}");
        foreach (var w in wrong.Take(20))
            sb.AppendLine("  WRONG " + w);
        foreach (var c in conflicting.Take(20))
            sb.AppendLine("  CONFLICT " + c);
        foreach (var t in duplicateCompletions.Take(5))
            sb.AppendLine(CultureInfo.InvariantCulture, $"  re-run example {t.TaskName} {t.Completed[0].InvocationId}: {string.Join("; ", t.Completed.Select(c => $"{c.Status} attempt {c.Attempt} pid {c.ProcessId} at {c.CompletedAt:HH:mm:ss.fff}"))}");

        var failures = new List<string>();
        if (timedOut)
            failures.Add("timed out");
        if (missing.Count > 0 || subMissing.Count > 0)
            failures.Add("missing completions");
        if (!Concurrent.IsEmpty)
            failures.Add("concurrent duplicates");
        if (orphansAfterKills > 0 || finalStrays.Count > 0 || afterStop.Count > 0)
            failures.Add("orphans");
        if (wrong.Count > 0)
            failures.Add("wrong final status");
        if (nextKill < o.Kills)
            failures.Add($"only {nextKill} of {o.Kills} kills happened");
        sb.AppendLine(failures.Count == 0 ? "RESULT: PASS (all invariants hold)" : $"RESULT: FAIL ({string.Join(", ", failures)})");
        Console.Write(sb.ToString());
        return failures.Count == 0 ? 0 : 1;
    }

    static void OnStarted(InvocationStarted m)
    {
        Interlocked.Increment(ref _totalStarted);
        var record = new StartedRecord(m.ProcessId, m.Attempt, m.StartedAt, DateTime.UtcNow, m.RunnerInstance);
        Watch.Track(m.ProcessId, m.StartedAt);
        var t = Tracks.GetOrAdd(m.InvocationId, _ => new Track());
        lock (t)
        {
            if (t.TaskName.Length == 0)
                t.TaskName = m.TaskName;
            foreach (var earlier in t.Started)
            {
                if (earlier.Pid == m.ProcessId)
                    continue;
                // The earlier process still alive now, or seen alive after the later one started: they overlapped.
                if (Watch.IsAliveSame(earlier.Pid, earlier.StartedAt))
                    Concurrent.Add(new ConcurrentDuplicate(m.InvocationId, t.TaskName, earlier, record, "earlier worker still alive when the second Started arrived"));
                else if (Watch.LastSeenAlive(earlier.Pid, earlier.StartedAt) is { } seen && seen > m.StartedAt)
                    Concurrent.Add(new ConcurrentDuplicate(m.InvocationId, t.TaskName, earlier, record, $"earlier worker seen alive at {seen:HH:mm:ss.fff}, after the second start"));
            }
            t.Started.Add(record);
        }
    }

    static void OnCompleted(InvocationCompleted m)
    {
        Interlocked.Increment(ref _totalCompleted);
        var t = Tracks.GetOrAdd(m.InvocationId, _ => new Track());
        lock (t)
        {
            if (t.TaskName.Length == 0)
                t.TaskName = m.TaskName;
            t.Completed.Add(m);
            if (t.Submitted && t.Completed.Count == 1)
                Interlocked.Increment(ref _topCompleted);
        }
    }
}
