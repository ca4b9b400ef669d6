using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Text.Json;
using MassTransit;
using RunnerService.Contracts;
using RunnerService.Contracts.Client;

namespace RunnerService.Bench.Chaos;

/// <summary>
/// The chaos run, `RunnerService.Bench.dll chaos ...` (normally through `bash bench/soak.sh chaos`): several replicas on
/// one PostgreSQL saga store under a mixed load, with SIGKILLs and SIGTERMs of replicas, broker restarts and a
/// partition of one replica from the broker; then <see cref="HistoryChecker"/> judges what happened.
/// </summary>
static class ChaosRun
{
    const string EventsQueue = "chaos-events";

    static long Fib(int n) => n < 2 ? n : Fib(n - 1) + Fib(n - 2);

    static void Log(string message) =>
        Console.Error.WriteLine($"[chaos {DateTime.UtcNow:HH:mm:ss.fff}] {message}");

    public static async Task<int> RunAsync(string[] args)
    {
        ChaosOptions o;
        try
        {
            o = ChaosOptions.Parse(args);
        }
        catch (HelpRequestedException)
        {
            Console.WriteLine(ChaosOptions.Usage);
            return 0;
        }
        catch (Exception ex) when (ex is ArgumentException or FormatException or OverflowException)
        {
            Console.Error.WriteLine(ex.Message);
            Console.Error.WriteLine(ChaosOptions.Usage);
            return 2;
        }
        Directory.CreateDirectory(o.RunDirectory);
        ChildService.LogDirectory = Path.Combine(o.RunDirectory, "logs");
        var run = new Run(o);
        try
        {
            return await run.ExecuteAsync();
        }
        finally
        {
            await run.DisposeAsync();
        }
    }

    sealed class Run(ChaosOptions o) : IAsyncDisposable
    {
        readonly Random _rng = new(o.Seed);
        readonly ProcWatch _watch = new(o.Worker);
        readonly List<Replica> _replicas = [];
        readonly List<MarkerPipe> _markers = [];
        readonly CancellationTokenSource _stop = new();
        readonly SemaphoreSlim _submitGate = new(1, 1);
        ChaosHistory _history = null!;
        BrokerAdmin? _admin;
        string? _vhostName;
        readonly List<PartitionProxy> _proxies = []; // one per node (one for the single broker)
        readonly Dictionary<int, int> _nodeOfPort = []; // cluster mode: node AMQP port or proxy port -> node number
        IBusControl? _bus;
        string _state = "";
        Task _poller = Task.CompletedTask;
        int _submitted;
        volatile Replica? _faultTarget; // the replica a SIGKILL or SIGTERM fault is working on (its exit is expected)
        readonly CancellationTokenSource _deadlineCancel = new();
        Task _deadline = Task.CompletedTask;
        SagaSnapshot? _atDeadline;
        IReadOnlyCollection<Guid>? _uncompletedAtDeadline;

        public async Task<int> ExecuteAsync()
        {
            Log($"seed {o.Seed}; {o.Count} roots{(o.Rate > 0 ? $" at ≤ {o.Rate}/s" : "")}; {o.Replicas} replicas × {o.Slots} slots; in flight ≤ {o.InFlight}; faults: {o.SigKills} SIGKILL, " +
                $"{o.SigTerms} SIGTERM, {o.BrokerRestarts} broker restarts, {o.Partitions} × {o.PartitionLength.TotalSeconds:F0} s partition " +
                $"({(o.RefuseNewConnections ? "new connections refused" : "new connections black-holed")}); StaleAfter {o.StaleAfter:c}, " +
                $"HeartbeatInterval {o.Heartbeat:c}, RecoveryInterval {o.Recovery:c}; open deadline {o.OpenDeadline.TotalSeconds:F0} s; " +
                $"{Environment.ProcessorCount} cores, load {ProcStats.LoadAverage()}; run folder {o.RunDirectory}; saga schema {o.SagaSchema}" +
                (o.IsCluster ? $"; cluster of {o.ClusterNodes.Count} nodes ({string.Join(' ', o.ClusterNodes.Select(n => n.Authority))}), node faults: {o.NodeKills} SIGKILL, " +
                    $"{o.NodeStops} SIGTERM of node {(o.KillNode is { } kn ? kn.ToString(CultureInfo.InvariantCulture) : "busiest")}, down {o.NodeDownSeconds.Min:F0}..{o.NodeDownSeconds.Max:F0} s" : ""));
            _history = new ChaosHistory(o.RunDirectory, _watch);
            var leftovers = _watch.ScanWorkers();
            if (leftovers.Count > 0)
                Log($"WARNING: {leftovers.Count} processes of {o.Worker} exist before the start: {string.Join(' ', leftovers.Select(w => w.Pid))}");

            _admin = new BrokerAdmin(o.Broker, o.Management);
            _vhostName = $"chaos-{DateTime.UtcNow:HHmmss}";
            var vhost = await _admin.CreateVirtualHostAsync(_vhostName);
            _state = Directory.CreateTempSubdirectory("runner-chaos-state-").FullName;
            // Cluster mode: every node's URL on the run's virtual host (the vhost is cluster-wide).
            List<Uri> nodes = o.IsCluster ? [.. o.ClusterNodes.Select(n => new UriBuilder(n) { Path = vhost.AbsolutePath }.Uri)] : [vhost];

            // The run's own bus: a durable queue for the events (it keeps what is published while the bus reconnects
            // after a broker restart); redeliveries to it are counted once by message id.
            _bus = Bus.Factory.CreateUsingRabbitMq(cfg =>
            {
                // On a cluster it lists every node from node 1 (as the service's BrokerConnection does), so it survives the
                // loss of any one; its events queue is a quorum queue, available while a majority of the nodes runs.
                cfg.Host(nodes[0], h =>
                {
                    if (nodes.Count > 1)
                        h.UseCluster(c =>
                        {
                            foreach (var n in nodes)
                                c.Node($"{n.Host}:{n.Port}");
                        });
                });
                cfg.ReceiveEndpoint(EventsQueue, e =>
                {
                    if (o.IsCluster)
                        e.SetQuorumQueue();
                    e.PrefetchCount = 512;
                    e.ConcurrentMessageLimit = 1;
                    e.Handler<InvocationStarted>(c => { _history.OnStarted(c.Message, c.MessageId); return Task.CompletedTask; });
                    e.Handler<InvocationCompleted>(c => { _history.OnCompleted(c.Message, c.MessageId); return Task.CompletedTask; });
                });
            });
            using (var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60)))
                await _bus.StartAsync(cts.Token);
            var client = new InvocationClient(_bus);

            for (var k = 0; k < nodes.Count; k++)
            {
                _nodeOfPort[nodes[k].Port] = k + 1;
                if (o.Partitions > 0)
                {
                    var target = new IPEndPoint(IPAddress.Parse(nodes[k].Host == "localhost" ? "127.0.0.1" : nodes[k].Host), nodes[k].Port);
                    var proxy = new PartitionProxy(target, o.RefuseNewConnections);
                    _proxies.Add(proxy);
                    _nodeOfPort[proxy.Port] = k + 1;
                    Log($"partition proxy on 127.0.0.1:{proxy.Port} -> {target}");
                }
            }
            for (var i = 1; i <= o.Replicas; i++)
            {
                var proxied = _proxies.Count > 0 && i == o.Replicas;
                Uri Node(int k) => proxied ? new UriBuilder(nodes[k]) { Port = _proxies[k].Port }.Uri : nodes[k];
                // Cluster mode: replica i lists every node starting at node (i mod N) + 1, so each is connected first
                // to a different node (with 3 replicas on 3 nodes: r1 -> node 2, r2 -> node 3, r3 -> node 1).
                var first = i % nodes.Count;
                var order = Enumerable.Range(0, nodes.Count).Select(k => (first + k) % nodes.Count).ToList();
                var connection = o.IsCluster ? string.Join(',', order.Select(k => Node(k).ToString())) : null;
                var id = $"chaos-r{i}";
                var markers = new MarkerPipe(Path.Combine(o.RunDirectory, $"markers-{id}.fifo"), Path.Combine(o.RunDirectory, $"markers-{id}.txt"));
                _markers.Add(markers);
                _replicas.Add(new Replica(id, Node(order[0]), proxied, markers.FifoPath, connection));
                if (connection is not null)
                    Log($"{id}: ConnectionStrings__RabbitMq={connection}");
            }
            foreach (var r in _replicas)
                await r.StartAsync(o, _state, Log);
            _poller = Task.Run(() => _watch.PollAsync(_stop.Token));

            Plan();
            var wall = Stopwatch.StartNew();
            var submitter = Task.Run(() => SubmitAsync(client));
            var faults = Task.Run(InjectFaultsAsync);

            // Progress, and replicas that die on their own (not a fault of the run's: reported as a violation, restarted).
            var deadline = DateTime.UtcNow + o.Timeout;
            var lastReport = Stopwatch.StartNew();
            var stalled = false;
            while (DateTime.UtcNow < deadline && !(submitter.IsCompleted && faults.IsCompleted && _history.RootsCompleted >= o.Count))
            {
                if (submitter.IsFaulted || faults.IsFaulted)
                    break;
                // Everything submitted, every fault over, the open deadline passed and no root completed for 30 s: the
                // roots still open will not complete (the deadline snapshot has them); waiting for the timeout adds nothing.
                if (submitter.IsCompleted && faults.IsCompleted && !_history.Faults.IsEmpty && _history.Faults.Max(f => f.EndedAt) + o.OpenDeadline < DateTimeOffset.UtcNow
                    && DateTimeOffset.UtcNow - _history.LastRootCompletedAt > TimeSpan.FromSeconds(30))
                {
                    stalled = true;
                    break;
                }
                foreach (var r in _replicas.Where(r => r != _faultTarget && r.Service is { HasExited: true }))
                {
                    Record("replica-exited", $"{r.InstanceId} (pid {r.Service!.Pid}) exited on its own; log tail:\n{r.Service.Tail(20)}");
                    await r.ForgetAsync();
                    await r.StartAsync(o, _state, Log);
                }
                if (lastReport.Elapsed > TimeSpan.FromSeconds(10))
                {
                    lastReport.Restart();
                    Log($"progress: submitted {Volatile.Read(ref _submitted)}/{o.Count}, roots completed {_history.RootsCompleted}, events started " +
                        $"{_history.StartedEvents} completed {_history.CompletedEvents}; workers {string.Join(", ", _replicas.Select(r => $"{r.InstanceId} {(r.IsUp ? r.Service!.ChildPids().Count.ToString(CultureInfo.InvariantCulture) : "down")}"))}; " +
                        $"load {ProcStats.LoadAverage()}");
                }
                await Task.Delay(250);
            }
            var timedOut = !stalled && _history.RootsCompleted < o.Count;
            if (submitter.IsFaulted)
                Log($"the submitter failed: {submitter.Exception}");
            if (faults.IsFaulted)
                Log($"the fault injection failed: {faults.Exception}");
            Log(timedOut ? $"TIMEOUT: {_history.RootsCompleted}/{o.Count} roots completed after {wall.Elapsed.TotalMinutes:F1} min"
                : stalled ? $"STALLED: {_history.RootsCompleted}/{o.Count} roots completed after {wall.Elapsed.TotalSeconds:F0} s, none for 30 s, the open deadline passed"
                : $"all {o.Count} roots completed after {wall.Elapsed.TotalSeconds:F0} s");
            await _stop.CancelAsync(); // the submitter and the fault loop stop here if they are still going
            await Task.WhenAll(submitter.ContinueWith(_ => { }, TaskScheduler.Default), faults.ContinueWith(_ => { }, TaskScheduler.Default));

            var lastFaultEnd = _history.Faults.IsEmpty ? (DateTimeOffset?)null : _history.Faults.Max(f => f.EndedAt);
            var checker = new HistoryChecker(_history, [.. _markers.Select(m => m.FilePath)]);
            var (atDeadline, final) = await SettleAsync(lastFaultEnd, checker);

            // The broker's view at the end: a queue without its consumers or with messages left tells where work stopped.
            var queues = await QueueReportAsync();
            // No worker may outlive the work: none alive once the run settled, none after the replicas stop.
            await Task.Delay(3000);
            var open = final.Rows.Values.Count(r => !r.IsFinal);
            foreach (var w in _watch.ScanWorkers())
                _history.WorkersLeft.Enqueue(new WorkerLeft(
                    $"at the end of the run, replicas still up ({(open == 0 ? "every saga row final" : $"{open} saga rows not final")})", w.Pid, w.PPid, w.State));
            await Task.WhenAll(_replicas.Where(r => r.IsUp).Select(async r =>
            {
                var pid = r.Service!.Pid;
                if (!await StopGracefullyAsync(r, TimeSpan.FromSeconds(60)))
                    Record("final-stop", $"{r.InstanceId} (pid {pid}) did not exit within 60 s of SIGTERM (killed)");
            }));
            await Task.Delay(2000);
            foreach (var w in _watch.ScanWorkers())
                _history.WorkersLeft.Enqueue(new WorkerLeft("2 s after the final SIGTERM stop of every replica", w.Pid, w.PPid, w.State));
            if (_history.AfterFreeze > 0)
                Log($"{_history.AfterFreeze} events arrived after the end of the judged history (the final stop reroutes what a replica still holds)");
            _history.Flush();
            foreach (var m in _markers)
                m.Dispose();

            await final.WriteAsync(Path.Combine(o.RunDirectory, "saga-final.jsonl"));
            if (atDeadline is not null)
                await atDeadline.WriteAsync(Path.Combine(o.RunDirectory, "saga-at-deadline.jsonl"));
            checker.Check(final, atDeadline, lastFaultEnd);
            foreach (var p in _problems)
                checker.Violations.Add(p);
            if (timedOut)
                checker.Violations.Add(new Violation("timed-out", $"{_history.RootsCompleted}/{o.Count} roots completed within {o.Timeout.TotalMinutes:F0} min"));
            var plannedFaults = o.Faults;
            if (_history.Faults.Count < plannedFaults)
                checker.Violations.Add(new Violation("faults-not-injected", $"only {_history.Faults.Count} of {plannedFaults} faults happened"));

            var report = Report(wall.Elapsed, lastFaultEnd, atDeadline, checker, queues);
            Console.Write(report);
            await File.WriteAllTextAsync(Path.Combine(o.RunDirectory, "summary.txt"), report);
            return checker.Violations.Count == 0 ? 0 : 1;
        }

        readonly List<Violation> _problems = [];

        void Record(string kind, string text)
        {
            Log($"PROBLEM {kind}: {text}");
            lock (_problems)
                _problems.Add(new Violation(kind, text));
        }

        readonly List<(RootPlan Plan, RunInvocation Message)> _plan = [];

        /// <summary>The mix: 25% sleep, 10% cpu, 35% marker (30% of them with children), 15% fib, 15% fanout.</summary>
        void Plan()
        {
            for (var i = 0; i < o.Count; i++)
            {
                var roll = _rng.Next(100);
                var id = NewId.NextGuid();
                RootPlan plan;
                if (roll < 25)
                {
                    var ms = _rng.Next(50, 501);
                    plan = new RootPlan(id, "sleep", $"{{\"ms\":{ms}}}", "slept", ms);
                }
                else if (roll < 35)
                {
                    plan = new RootPlan(id, "cpu", $"{{\"ms\":{_rng.Next(10, 81)}}}", "spins", null);
                }
                else if (roll < 70)
                {
                    var ms = _rng.Next(100, 2001);
                    var children = _rng.Next(10) < 3 ? Enumerable.Range(0, _rng.Next(1, 4)).Select(_ => _rng.Next(100, 801)).ToArray() : [];
                    var args = children.Length == 0 ? $"{{\"ms\":{ms}}}" : $"{{\"ms\":{ms},\"children\":[{string.Join(',', children)}]}}";
                    plan = new RootPlan(id, "marker", args, "marked", ms + children.Sum());
                }
                else if (roll < 85)
                {
                    var n = _rng.Next(3, 6);
                    plan = new RootPlan(id, "fib", $"{{\"n\":{n}}}", null, Fib(n));
                }
                else
                {
                    var (width, depth) = (_rng.Next(2, 4), _rng.Next(1, 3));
                    plan = new RootPlan(id, "fanout", $"{{\"width\":{width},\"depth\":{depth}}}", null, (long)Math.Pow(width, depth));
                }
                _history.Roots[id] = plan;
                _plan.Add((plan, new RunInvocation
                {
                    InvocationId = id,
                    TaskName = plan.TaskName,
                    Arguments = JsonDocument.Parse(plan.Arguments).RootElement.Clone(),
                }));
            }
        }

        /// <summary>
        /// Publishes the roots in order, keeping at most --in-flight of them uncompleted. The gate is held around broker
        /// restarts, so no publish is left waiting for a confirm the restart loses (its retry could submit a root twice).
        /// </summary>
        async Task SubmitAsync(InvocationClient client)
        {
            var pace = Stopwatch.StartNew();
            foreach (var (plan, message) in _plan)
            {
                while (Volatile.Read(ref _submitted) - _history.RootsCompleted - StuckRoots() >= o.InFlight
                    || (o.Rate > 0 && Volatile.Read(ref _submitted) >= o.Rate * pace.Elapsed.TotalSeconds))
                    await Task.Delay(20, _stop.Token);
                await _submitGate.WaitAsync(_stop.Token);
                try
                {
                    plan.SubmittedAt = DateTimeOffset.UtcNow;
                    for (var attempt = 1; ; attempt++)
                    {
                        try
                        {
                            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(_stop.Token);
                            timeout.CancelAfter(TimeSpan.FromSeconds(30));
                            await client.SubmitAsync(message with { SubmittedAt = plan.SubmittedAt }, timeout.Token);
                            break;
                        }
                        catch (Exception ex) when (!_stop.IsCancellationRequested)
                        {
                            Log($"WARNING: publishing root {plan.Id} failed (attempt {attempt}, tried again in 1 s): {ex.Message}");
                            await Task.Delay(1000, _stop.Token);
                        }
                    }
                }
                finally
                {
                    _submitGate.Release();
                }
                Interlocked.Increment(ref _submitted);
            }
            Log($"all {o.Count} roots submitted");
        }

        int _stuck;
        readonly Stopwatch _stuckCounted = Stopwatch.StartNew();

        /// <summary>
        /// Roots submitted more than 3 minutes ago and still without a completion (counted once a second): they no
        /// longer hold a place in flight, or a few invocations that never end would stop the submission for good.
        /// </summary>
        int StuckRoots()
        {
            if (_stuckCounted.Elapsed < TimeSpan.FromSeconds(1))
                return _stuck;
            _stuckCounted.Restart();
            var before = DateTimeOffset.UtcNow - TimeSpan.FromMinutes(3);
            _stuck = _plan.Take(Volatile.Read(ref _submitted)).Count(p => p.Plan.SubmittedAt < before && !_history.Completed.ContainsKey(p.Plan.Id));
            return _stuck;
        }

        /// <summary>
        /// The faults in random order, one at a time: fault i once i/F of the roots (5%..92%) are submitted and at least
        /// --fault-gap-seconds after the previous fault ended.
        /// </summary>
        async Task InjectFaultsAsync()
        {
            var kinds = Enumerable.Repeat("SIGKILL", o.SigKills).Concat(Enumerable.Repeat("SIGTERM", o.SigTerms))
                .Concat(Enumerable.Repeat("broker-restart", o.BrokerRestarts)).Concat(Enumerable.Repeat("partition", o.Partitions))
                .Concat(Enumerable.Repeat("node-kill", o.NodeKills)).Concat(Enumerable.Repeat("node-stop", o.NodeStops))
                .OrderBy(_ => _rng.Next()).ToArray();
            var at = Enumerable.Range(0, kinds.Length).Select(i => 0.05 + 0.87 * (i + _rng.NextDouble()) / kinds.Length).ToArray();
            Log($"fault plan: {string.Join(", ", kinds.Select((k, i) => $"{k} at {at[i]:P0} submitted"))}");
            var lastEnd = Stopwatch.StartNew();
            for (var i = 0; i < kinds.Length; i++)
            {
                while (Volatile.Read(ref _submitted) < at[i] * o.Count || lastEnd.Elapsed < o.FaultGap)
                    await Task.Delay(100, _stop.Token);
                _faultTarget = kinds[i] is "SIGKILL" or "SIGTERM" ? _replicas[_rng.Next(_replicas.Count)] : null;
                // A replica being restarted after exiting on its own is not ready to be killed yet.
                for (var wait = 0; _faultTarget is { IsUp: false } && wait < 600; wait++)
                    await Task.Delay(100, _stop.Token);
                var record = kinds[i] switch
                {
                    "SIGKILL" => await KillAsync(i + 1, _faultTarget!),
                    "SIGTERM" => await TerminateAsync(i + 1, _faultTarget!),
                    "broker-restart" => await RestartBrokerAsync(i + 1),
                    "node-kill" => await NodeFaultAsync(i + 1, "KILL"),
                    "node-stop" => await NodeFaultAsync(i + 1, "TERM"),
                    _ => await PartitionAsync(i + 1, _replicas.Single(r => r.Proxied)),
                };
                _faultTarget = null;
                record.EndedAt = DateTimeOffset.UtcNow;
                _history.Faults.Enqueue(record);
                Log($"FAULT #{record.Number} {record.Kind} {record.Target} over ({(record.EndedAt - record.StartedAt).TotalSeconds:F1} s): {record.Detail}");
                lastEnd.Restart();
            }
            Log("all faults injected");
            var lastFaultEnd = _history.Faults.Max(f => f.EndedAt);
            _deadline = Task.Run(() => DeadlineSnapshotAsync(lastFaultEnd));
        }

        /// <summary>
        /// At --open-deadline-seconds after the last fault ended: the saga rows and the roots submitted before that
        /// fault ended that are still open. Cancelled when everything was final before.
        /// </summary>
        async Task DeadlineSnapshotAsync(DateTimeOffset lastFaultEnd)
        {
            var wait = lastFaultEnd + o.OpenDeadline - DateTimeOffset.UtcNow;
            if (wait > TimeSpan.Zero)
                await Task.Delay(wait, _deadlineCancel.Token);
            // A plan not submitted yet has no SubmittedAt (default): it was not "submitted before the last fault ended".
            // Counted, it made every root still waiting to be submitted at the deadline a violation (the 10,000 run
            // of 2026-11-30 13:15, where two replicas were deaf and submission lagged: 373 false ones).
            var uncompleted = _history.Roots.Values.Where(r => r.SubmittedAt != default && r.SubmittedAt <= lastFaultEnd && !_history.Completed.ContainsKey(r.Id))
                .Select(r => r.Id).ToList();
            var snapshot = await SagaSnapshot.TakeAsync(o.Sagas, o.SagaSchema);
            Log($"open deadline ({o.OpenDeadline.TotalSeconds:F0} s after the last fault): {snapshot.Rows.Values.Count(r => !r.IsFinal)} saga rows not final, " +
                $"{uncompleted.Count} roots submitted before it ended without a completion");
            (_atDeadline, _uncompletedAtDeadline) = (snapshot, uncompleted);
        }

        FaultRecord Begin(int number, string kind, string target)
        {
            var at = Volatile.Read(ref _submitted);
            Log($"FAULT #{number} {kind} {target} at {at}/{o.Count} submitted, {_history.RootsCompleted} roots completed");
            return new FaultRecord(number, kind, target, DateTimeOffset.UtcNow);
        }

        /// <summary>Workers of the run whose parent is no live replica: orphans.</summary>
        List<ProcWatch.Worker> Orphans()
        {
            var live = _replicas.Where(r => r.IsUp).Select(r => r.Service!.Pid).ToHashSet();
            return [.. _watch.ScanWorkers().Where(w => !live.Contains(w.PPid))];
        }

        async Task<FaultRecord> KillAsync(int number, Replica replica)
        {
            var record = Begin(number, "SIGKILL", replica.InstanceId);
            var children = replica.Service!.ChildPids();
            var paused = children.Count(p => ProcWatch.State(p) == "T");
            await replica.Service.KillAsync();
            await Task.Delay(2000);
            var orphans = Orphans();
            foreach (var w in orphans)
                _history.WorkersLeft.Enqueue(new WorkerLeft($"2 s after the SIGKILL of {replica.InstanceId} (fault #{number})", w.Pid, w.PPid, w.State));
            await replica.ForgetAsync();
            await Task.Delay(_rng.Next(0, 3000));
            await replica.StartAsync(o, _state, Log);
            record.Detail = $"{children.Count} workers ({paused} paused) died with it; {orphans.Count} orphans 2 s later; back after {(DateTimeOffset.UtcNow - record.StartedAt).TotalSeconds:F1} s";
            return record;
        }

        async Task<FaultRecord> TerminateAsync(int number, Replica replica)
        {
            var record = Begin(number, "SIGTERM", replica.InstanceId);
            var children = replica.Service!.ChildPids();
            var paused = children.Count(p => ProcWatch.State(p) == "T");
            var watch = Stopwatch.StartNew();
            var graceful = await StopGracefullyAsync(replica, TimeSpan.FromSeconds(90));
            var stopped = watch.Elapsed;
            if (!graceful)
                Record("sigterm-stop", $"{replica.InstanceId} did not exit within 90 s of SIGTERM (fault #{number}; killed)");
            await Task.Delay(1000);
            var orphans = Orphans();
            foreach (var w in orphans)
                _history.WorkersLeft.Enqueue(new WorkerLeft($"1 s after {replica.InstanceId} exited on SIGTERM (fault #{number})", w.Pid, w.PPid, w.State));
            await replica.ForgetAsync();
            await Task.Delay(_rng.Next(0, 3000));
            await replica.StartAsync(o, _state, Log);
            record.Detail = $"{children.Count} workers ({paused} paused) at the signal; exited after {stopped.TotalSeconds:F1} s; {orphans.Count} orphans 1 s later; " +
                $"back after {(DateTimeOffset.UtcNow - record.StartedAt).TotalSeconds:F1} s";
            return record;
        }

        static async Task<bool> StopGracefullyAsync(Replica replica, TimeSpan patience)
        {
            var service = replica.Service!;
            ProcStats.Signal(service.Pid, ProcStats.SIGTERM);
            var watch = Stopwatch.StartNew();
            while (!service.HasExited && watch.Elapsed < patience)
                await Task.Delay(50);
            var graceful = service.HasExited;
            if (!graceful)
                await service.KillAsync();
            await replica.ForgetAsync();
            return graceful;
        }

        async Task<FaultRecord> RestartBrokerAsync(int number)
        {
            var record = Begin(number, "broker-restart", o.Broker.Authority);
            // No publish of ours may be waiting for a confirm when the broker goes.
            await _submitGate.WaitAsync(_stop.Token);
            try
            {
                var (stopCode, stopOutput) = await RunScriptAsync("stop");
                if (stopCode != 0)
                    Record("broker-restart", $"rabbitmq.sh stop failed ({stopCode}): {stopOutput}");
                var downFor = _rng.Next(2000, 6001);
                await Task.Delay(downFor);
                var (startCode, startOutput) = await RunScriptAsync("start");
                if (startCode != 0)
                    throw new InvalidOperationException($"rabbitmq.sh start failed ({startCode}): {startOutput}");
                record.Detail = $"stopped, down {downFor} ms, started; broker back after {(DateTimeOffset.UtcNow - record.StartedAt).TotalSeconds:F1} s";
            }
            finally
            {
                _submitGate.Release();
            }
            return record;
        }

        Task<(int Code, string Output)> RunScriptAsync(string verb) => RunScriptAsync(o.RabbitMqScript!, verb);

        static async Task<(int Code, string Output)> RunScriptAsync(string script, params string[] args)
        {
            var start = new ProcessStartInfo("bash") { RedirectStandardOutput = true, RedirectStandardError = true };
            start.ArgumentList.Add(script);
            foreach (var a in args)
                start.ArgumentList.Add(a);
            using var process = Process.Start(start)!;
            var stdout = process.StandardOutput.ReadToEndAsync();
            var stderr = process.StandardError.ReadToEndAsync();
            await process.WaitForExitAsync();
            var output = (await stdout + await stderr).Trim();
            return (process.ExitCode, output.Length > 2000 ? output[^2000..] : output);
        }

        /// <summary>
        /// Cluster mode: SIGKILL or SIGTERM of one broker node (rabbitmq-cluster.sh kill-node), --node-down-seconds down,
        /// then start-node (it rejoins with its data). The node is --kill-node, or the one most live replicas are connected
        /// to; the fault waits up to 30 s for those replicas to hold a paused worker (work that waits on children), so
        /// the node goes while its replicas run and hold paused work. The submitter pauses while the node goes, so no
        /// publish of ours waits on a confirm the node takes with it.
        /// </summary>
        async Task<FaultRecord> NodeFaultAsync(int number, string signal)
        {
            int node;
            Dictionary<int, List<Replica>> connected;
            var waited = Stopwatch.StartNew();
            while (true)
            {
                connected = ConnectedReplicas();
                node = o.KillNode ?? connected.OrderByDescending(c => c.Value.Count).ThenByDescending(c => c.Value.Sum(Paused)).ThenBy(_ => _rng.Next()).First().Key;
                if (connected[node].Sum(Paused) > 0 || waited.Elapsed > TimeSpan.FromSeconds(30))
                    break;
                await Task.Delay(250, _stop.Token);
            }
            var on = connected[node];
            var record = Begin(number, signal == "KILL" ? "node-kill" : "node-stop", $"node {node} ({o.ClusterNodes[node - 1].Authority})");
            var before = $"replicas connected to it: {(on.Count == 0 ? "none" : string.Join(", ", on.Select(r => $"{r.InstanceId} ({Paused(r)} paused workers)")))}";
            TimeSpan downAfter;
            await _submitGate.WaitAsync(_stop.Token);
            try
            {
                var (code, output) = await RunScriptAsync(o.ClusterScript!, "kill-node", node.ToString(CultureInfo.InvariantCulture), signal);
                downAfter = DateTimeOffset.UtcNow - record.StartedAt;
                if (code != 0)
                    throw new InvalidOperationException($"rabbitmq-cluster.sh kill-node {node} {signal} failed ({code}): {output}");
                await Task.Delay(2000, _stop.Token);
            }
            finally
            {
                _submitGate.Release();
            }
            var downFor = TimeSpan.FromSeconds(o.NodeDownSeconds.Min + _rng.NextDouble() * (o.NodeDownSeconds.Max - o.NodeDownSeconds.Min));
            await Task.Delay(downFor, _stop.Token);
            var moved = ConnectedReplicas();
            var whileDown = $"while down: {string.Join(", ", moved.Where(c => c.Value.Count > 0).Select(c => $"node {c.Key} <- {string.Join('+', c.Value.Select(r => r.InstanceId))}"))}";
            var (startCode, startOutput) = await RunScriptAsync(o.ClusterScript!, "start-node", node.ToString(CultureInfo.InvariantCulture));
            if (startCode != 0)
                throw new InvalidOperationException($"rabbitmq-cluster.sh start-node {node} failed ({startCode}): {startOutput}");
            record.Detail = $"{before}; down after {downAfter.TotalSeconds:F1} s (SIG{signal}); {whileDown}; start-node after {downFor.TotalSeconds:F0} s down; " +
                $"back after {(DateTimeOffset.UtcNow - record.StartedAt).TotalSeconds:F1} s";
            return record;
        }

        static int Paused(Replica r) => r.IsUp ? r.Service!.ChildPids().Count(p => ProcWatch.State(p) == "T") : 0;

        /// <summary>
        /// Cluster mode: which node each live replica holds an established TCP connection to (its sockets in
        /// /proc/PID/fd matched with /proc/net/tcp; a proxied replica's proxy port counts as the proxy's node).
        /// </summary>
        Dictionary<int, List<Replica>> ConnectedReplicas()
        {
            var result = Enumerable.Range(1, o.ClusterNodes.Count).ToDictionary(k => k, _ => new List<Replica>());
            var sockets = new Dictionary<string, int>(); // socket inode -> remote port
            foreach (var file in new[] { "/proc/net/tcp", "/proc/net/tcp6" })
            {
                if (!File.Exists(file))
                    continue;
                foreach (var line in File.ReadLines(file).Skip(1))
                {
                    var f = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
                    if (f.Length < 10 || f[3] != "01")
                        continue;
                    sockets[f[9]] = int.Parse(f[2][(f[2].LastIndexOf(':') + 1)..], NumberStyles.HexNumber, CultureInfo.InvariantCulture);
                }
            }
            foreach (var r in _replicas.Where(r => r.IsUp))
            {
                var nodesOfReplica = new HashSet<int>();
                try
                {
                    foreach (var fd in Directory.EnumerateFileSystemEntries($"/proc/{r.Service!.Pid}/fd"))
                    {
                        string? target;
                        try
                        {
                            target = new FileInfo(fd).LinkTarget;
                        }
                        catch (IOException)
                        {
                            continue;
                        }
                        if (target is not null && target.StartsWith("socket:[", StringComparison.Ordinal)
                            && sockets.TryGetValue(target[8..^1], out var port) && _nodeOfPort.TryGetValue(port, out var node))
                            nodesOfReplica.Add(node);
                    }
                }
                catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
                {
                }
                foreach (var node in nodesOfReplica)
                    result[node].Add(r);
            }
            return result;
        }

        async Task<FaultRecord> PartitionAsync(int number, Replica replica)
        {
            var record = Begin(number, "partition", replica.InstanceId);
            var before = _proxies.Sum(p => p.BlackHoled);
            var reset = _proxies.Sum(p => p.Cut());
            await Task.Delay(o.PartitionLength);
            foreach (var p in _proxies)
                p.Heal();
            record.Detail = $"{reset} connections reset at the cut, " +
                (o.RefuseNewConnections ? "new connections refused (listener closed)" : $"{_proxies.Sum(p => p.BlackHoled) - before} new connections black-holed") +
                $" during it; healed after {(DateTimeOffset.UtcNow - record.StartedAt).TotalSeconds:F1} s";
            return record;
        }

        /// <summary>
        /// Waits for the run's own queue to drain and every saga row to be final, and 20 s at least after the last fault
        /// ended: at most 15 s, or past the open
        /// deadline if it is later. The deadline snapshot is dropped when everything was final before it (the end is then
        /// the stronger check).
        /// </summary>
        async Task<(SagaSnapshot? AtDeadline, SagaSnapshot Final)> SettleAsync(DateTimeOffset? lastFaultEnd, HistoryChecker checker)
        {
            var until = DateTimeOffset.UtcNow + TimeSpan.FromSeconds(15);
            if (lastFaultEnd + o.OpenDeadline + TimeSpan.FromSeconds(5) is { } d && d > until)
                until = d;
            // Replicas publish what the last fault held up (a broker restart, a partition) for a while after it ended.
            var notBefore = (lastFaultEnd ?? DateTimeOffset.MinValue) + TimeSpan.FromSeconds(20);
            if (notBefore > until)
                until = notBefore;
            SagaSnapshot final;
            while (true)
            {
                var queueEmpty = await QueueEmptyAsync();
                final = await SagaSnapshot.TakeAsync(o.Sagas, o.SagaSchema);
                var open = final.Rows.Values.Count(r => !r.IsFinal);
                if ((open == 0 && queueEmpty && DateTimeOffset.UtcNow >= notBefore) || DateTimeOffset.UtcNow >= until)
                {
                    Log($"settled: {final.Rows.Count} saga rows, {open} not final; events queue {(queueEmpty ? "empty" : "NOT empty")}");
                    break;
                }
                await Task.Delay(2000);
            }
            await _deadlineCancel.CancelAsync();
            try
            {
                await _deadline;
            }
            catch (OperationCanceledException)
            {
            }
            checker.UncompletedAtDeadline = _uncompletedAtDeadline;
            // Late duplicates (a completion published again) would arrive within moments; then the history ends.
            await Task.Delay(3000);
            if (final.Rows.Values.Any(r => !r.IsFinal))
                final = await SagaSnapshot.TakeAsync(o.Sagas, o.SagaSchema);
            _history.Freeze();
            _history.Flush();
            return (_atDeadline, final);
        }

        async Task<bool> QueueEmptyAsync()
        {
            try
            {
                var vhost = new UriBuilder(o.Broker) { Path = "/" + Uri.EscapeDataString(_vhostName!) }.Uri;
                return await BrokerAdmin.QueueDepthAsync(vhost, EventsQueue) is { Ready: 0, Consumers: > 0 };
            }
            catch (Exception ex) when (ex is RabbitMQ.Client.Exceptions.BrokerUnreachableException or IOException)
            {
                return false;
            }
        }

        async Task<string> QueueReportAsync()
        {
            try
            {
                var queues = await _admin!.QueuesAsync(_vhostName!);
                return "queues at the end (consumers/ready/unacked): " + string.Join(", ", queues.OrderBy(q => q.Name).Select(q => $"{q.Name} {q.Consumers}/{q.Ready}/{q.Unacked}"));
            }
            catch (HttpRequestException ex)
            {
                return $"queues at the end: management API failed ({ex.Message})";
            }
        }

        string Report(TimeSpan elapsed, DateTimeOffset? lastFaultEnd, SagaSnapshot? atDeadline, HistoryChecker checker, string queues)
        {
            var lines = new List<string>
            {
                "==== chaos summary ====",
                $"seed {o.Seed}; {o.Replicas} replicas × {o.Slots} slots, in flight ≤ {o.InFlight}{(o.Rate > 0 ? $", ≤ {o.Rate} roots/s" : "")}; StaleAfter {o.StaleAfter:c}, HeartbeatInterval {o.Heartbeat:c}, " +
                $"RecoveryInterval {o.Recovery:c}, ShutdownGrace 00:00:05, KillGrace 00:00:02; {Environment.ProcessorCount} cores; elapsed {elapsed.TotalSeconds:F0} s",
                $"replica starts: {string.Join(", ", _replicas.Select(r => $"{r.InstanceId} {r.Starts}{(r.Proxied ? " (behind the proxy)" : "")}" +
                    (o.IsCluster ? $" (first node {_nodeOfPort[r.Broker.Port]})" : "")))}",
                $"faults ({_history.Faults.Count}); the last ended at {lastFaultEnd:HH:mm:ss.fff}; " +
                (atDeadline is null ? "everything was final before the open deadline (checked at the end instead)" : $"open deadline snapshot at {atDeadline.TakenAt:HH:mm:ss.fff}"),
            };
            lines.AddRange(_history.Faults.Select(f => $"  #{f.Number} {f.StartedAt:HH:mm:ss.fff} {f.Kind} {f.Target}: {f.Detail}"));
            lines.Add($"service logs: {LogCount("No broker contact for")} workers fenced; recoveries asked: {LogCount("which is gone: asking the saga to run it again")} " +
                $"for a replica gone, {LogCount("but this replica holds no such paused worker")} for a worker lost with a restart; " +
                $"{LogCount("RerouteFailed")} reroutes failed at shutdown");
            lines.Add(queues);
            var text = string.Join(Environment.NewLine, lines) + Environment.NewLine + checker.Report();
            return text + (checker.Violations.Count == 0 ? "RESULT: PASS (no violation)" : $"RESULT: FAIL ({checker.Violations.Count} violations)") + Environment.NewLine;
        }

        int LogCount(string text)
        {
            var n = 0;
            foreach (var file in Directory.EnumerateFiles(ChildService.LogDirectory, "*.log"))
                n += File.ReadLines(file).Count(l => l.Contains(text, StringComparison.Ordinal));
            return n;
        }

        public async ValueTask DisposeAsync()
        {
            if (!_stop.IsCancellationRequested)
                await _stop.CancelAsync();
            foreach (var r in _replicas.Where(r => r.Service is not null))
            {
                await r.Service!.KillAsync();
                await r.ForgetAsync();
            }
            try
            {
                await _poller;
            }
            catch (OperationCanceledException)
            {
            }
            if (_bus is not null)
            {
                try
                {
                    using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));
                    await _bus.StopAsync(cts.Token);
                }
                catch (Exception ex) when (ex is OperationCanceledException or TimeoutException)
                {
                }
            }
            foreach (var p in _proxies)
                await p.DisposeAsync();
            if (_admin is not null)
            {
                if (_vhostName is not null)
                    await _admin.DeleteVirtualHostAsync(_vhostName);
                _admin.Dispose();
            }
            _history?.Dispose();
            foreach (var m in _markers)
                m.Dispose();
            if (!o.KeepSchema)
            {
                try
                {
                    await SagaSnapshot.DropSchemaAsync(o.Sagas, o.SagaSchema);
                }
                catch (Exception ex) when (ex is Npgsql.NpgsqlException or InvalidOperationException)
                {
                    Log($"WARNING: dropping schema {o.SagaSchema} failed: {ex.Message}");
                }
            }
            if (_state.Length > 0)
            {
                try
                {
                    Directory.Delete(_state, recursive: true);
                }
                catch (IOException)
                {
                }
            }
            _stop.Dispose();
            _deadlineCancel.Dispose();
            _submitGate.Dispose();
        }
    }
}
