using System.Globalization;

namespace RunnerService.Bench.Chaos;

/// <summary>Options of `RunnerService.Bench.dll chaos`; defaults are the recorded 10,000-invocation run's.</summary>
sealed class ChaosOptions
{
    public const string Usage = """
        chaos mode: RunnerService.Bench.dll chaos [options]   (normally: bash bench/soak.sh chaos [options])
          (bash bench/soak.sh chaos --cluster N ... starts a private N-node RabbitMQ cluster instead of the single broker
          and passes --cluster-urls and --cluster-script: the cluster mode)
          --count N                 root invocations (default 10000): sleep, cpu, marker, fib, fanout
          --replicas R              RunnerService processes sharing one PostgreSQL saga store (default 3)
          --slots S                 Runner__Slots of each (default 4)
          --in-flight N             most roots submitted and not yet completed (default 200): bounds the backlog, so
                                    what was submitted before the last fault can finish within --open-deadline
          --rate R                  submit at most R roots per second (default 0: as fast as --in-flight allows);
                                    spreads a short run's load over the time its faults take
          --sigkills K              SIGKILL + restart of a random replica, K times (default 4)
          --sigterms T              SIGTERM (graceful stop) + restart of a random replica, T times (default 3)
          --broker-restarts B       deploy/local/rabbitmq.sh stop + start, state kept (default 2)
          --partitions P            cuts of the last replica's broker connection through the TCP proxy (default 1; in
                                    cluster mode one proxy per node, all cut at once)
          --partition-seconds X     length of a cut (default 30)
          --new-connections MODE    during a cut: blackhole (accept, never forward; default) or refuse
          --cluster-urls URLS       cluster mode: the nodes' AMQP URLs, comma-separated (bash bench/soak.sh chaos --cluster N
                                    starts the cluster and passes them). Replica i lists every node starting at node
                                    (i mod N)+1, the bench's own bus every node from node 1; every durable queue is a
                                    quorum queue (the service's default with several nodes; the bench's events queue too).
                                    --broker-restarts defaults to 0 and must stay 0; the node faults below replace it
          --cluster-script PATH     deploy/local/rabbitmq-cluster.sh, run with this process's RUNNER_CLUSTER_* environment
                                    for the node faults (required when --node-kills or --node-stops > 0)
          --node-kills K            cluster mode: `kill-node N KILL` (SIGKILL of a broker node), later `start-node N`;
                                    K times (default 0)
          --node-stops S            cluster mode: the same with SIGTERM (graceful node stop); S times (default 0)
          --kill-node N|busiest     the node those faults hit (default busiest: at the fault, the node that most live
                                    replicas are connected to, from /proc/net/tcp; ties: the one whose replicas hold
                                    more paused workers)
          --node-down-seconds A..B  how long a node stays down before start-node (default 10..20)
          --fault-gap-seconds G     least time from the end of one fault to the next (default 20)
          --stale-after T           Runner__StaleAfter (default 00:00:10)
          --heartbeat T             Runner__HeartbeatInterval (default 00:00:02)
          --recovery T              Runner__RecoveryInterval (default 00:00:02)
          --open-deadline-seconds D nothing submitted before the last fault may be open D s after it ends (default 120)
          --timeout-min M           give up waiting for the roots after M minutes (default 45)
          --seed X                  random seed (default: time based, printed)
          --service-dll PATH        RunnerService.dll to run (required)
          --worker PATH             worker executable, a private copy: every live process of it is the run's (required)
          --broker URL              AMQP URL of the broker (default $RABBITMQ_URL)
          --management URL          management URL (default $RABBITMQ_MANAGEMENT_URL)
          --rabbitmq-script PATH    deploy/local/rabbitmq.sh, run with this process's RUNNER_BROKER_* environment for
                                    the broker restarts (required when --broker-restarts > 0)
          --sagas CONN              Npgsql connection string of the shared saga store (default $RUNNER_CHAOS_POSTGRES)
          --saga-schema NAME        Runner__SagaSchema (default chaos_<time>); dropped at the end unless --keep-schema
          --keep-schema             keep the saga tables after the run
          --run-dir DIR             markers, events, service logs, summary (default /tmp/runner-chaos-<time>)
        Exit code 0 only when the history checker finds no violation.
        """;

    public int Count = 10_000;
    public int Replicas = 3;
    public int Slots = 4;
    public int InFlight = 200;
    public double Rate;
    public int SigKills = 4;
    public int SigTerms = 3;
    public int BrokerRestarts = 2;
    public int Partitions = 1;
    public TimeSpan PartitionLength = TimeSpan.FromSeconds(30);
    public bool RefuseNewConnections;
    public TimeSpan FaultGap = TimeSpan.FromSeconds(20);
    public TimeSpan StaleAfter = TimeSpan.FromSeconds(10);
    public TimeSpan Heartbeat = TimeSpan.FromSeconds(2);
    public TimeSpan Recovery = TimeSpan.FromSeconds(2);
    public TimeSpan OpenDeadline = TimeSpan.FromSeconds(120);
    public TimeSpan Timeout = TimeSpan.FromMinutes(45);
    public int Seed = Environment.TickCount & int.MaxValue;
    public string ServiceDll = "";
    public string Worker = "";
    public Uri Broker = new(Environment.GetEnvironmentVariable("RABBITMQ_URL") ?? "amqp://guest:guest@127.0.0.1:5822/");
    public Uri Management = new(Environment.GetEnvironmentVariable("RABBITMQ_MANAGEMENT_URL") ?? "http://guest:guest@127.0.0.1:15822/");
    public string? RabbitMqScript;
    public string Sagas = Environment.GetEnvironmentVariable("RUNNER_CHAOS_POSTGRES") ?? "";
    public string SagaSchema = $"chaos_{DateTime.UtcNow:yyyyMMdd_HHmmss}";
    public bool KeepSchema;
    public string RunDirectory = Path.Combine(Path.GetTempPath(), $"runner-chaos-{DateTime.UtcNow:yyyyMMdd-HHmmss}");

    public IReadOnlyList<Uri> ClusterNodes = [];
    public string? ClusterScript;
    public int NodeKills;
    public int NodeStops;
    public int? KillNode; // null: the busiest node at the fault
    public (double Min, double Max) NodeDownSeconds = (10, 20);

    public bool IsCluster => ClusterNodes.Count > 0;

    public int Faults => SigKills + SigTerms + BrokerRestarts + Partitions + NodeKills + NodeStops;

    public static ChaosOptions Parse(string[] args)
    {
        var o = new ChaosOptions();
        var brokerRestartsGiven = false;
        for (var i = 1; i < args.Length; i++)
        {
            string Next() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{args[i]} needs a value");
            int Int() => int.Parse(Next(), CultureInfo.InvariantCulture);
            TimeSpan Span() => TimeSpan.Parse(Next(), CultureInfo.InvariantCulture);
            TimeSpan Seconds() => TimeSpan.FromSeconds(double.Parse(Next(), CultureInfo.InvariantCulture));
            switch (args[i])
            {
                case "--count": o.Count = Int(); break;
                case "--replicas": o.Replicas = Int(); break;
                case "--slots": o.Slots = Int(); break;
                case "--in-flight": o.InFlight = Int(); break;
                case "--rate": o.Rate = double.Parse(Next(), CultureInfo.InvariantCulture); break;
                case "--sigkills": o.SigKills = Int(); break;
                case "--sigterms": o.SigTerms = Int(); break;
                case "--broker-restarts": o.BrokerRestarts = Int(); brokerRestartsGiven = true; break;
                case "--cluster-urls":
                    o.ClusterNodes = [.. Next().Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries).Select(u => new Uri(u))];
                    break;
                case "--cluster-script": o.ClusterScript = Path.GetFullPath(Next()); break;
                case "--node-kills": o.NodeKills = Int(); break;
                case "--node-stops": o.NodeStops = Int(); break;
                case "--kill-node":
                    var node = Next();
                    o.KillNode = node == "busiest" ? null : int.Parse(node, CultureInfo.InvariantCulture);
                    break;
                case "--node-down-seconds":
                    var range = Next().Split("..");
                    var min = double.Parse(range[0], CultureInfo.InvariantCulture);
                    o.NodeDownSeconds = (min, range.Length > 1 ? double.Parse(range[1], CultureInfo.InvariantCulture) : min);
                    break;
                case "--partitions": o.Partitions = Int(); break;
                case "--partition-seconds": o.PartitionLength = Seconds(); break;
                case "--new-connections":
                    o.RefuseNewConnections = Next() switch
                    {
                        "refuse" => true,
                        "blackhole" => false,
                        var other => throw new ArgumentException($"--new-connections is blackhole or refuse, not {other}"),
                    };
                    break;
                case "--fault-gap-seconds": o.FaultGap = Seconds(); break;
                case "--stale-after": o.StaleAfter = Span(); break;
                case "--heartbeat": o.Heartbeat = Span(); break;
                case "--recovery": o.Recovery = Span(); break;
                case "--open-deadline-seconds": o.OpenDeadline = Seconds(); break;
                case "--timeout-min": o.Timeout = TimeSpan.FromMinutes(double.Parse(Next(), CultureInfo.InvariantCulture)); break;
                case "--seed": o.Seed = Int(); break;
                case "--service-dll": o.ServiceDll = Path.GetFullPath(Next()); break;
                case "--worker": o.Worker = Path.GetFullPath(Next()); break;
                case "--broker": o.Broker = new Uri(Next()); break;
                case "--management": o.Management = new Uri(Next()); break;
                case "--rabbitmq-script": o.RabbitMqScript = Path.GetFullPath(Next()); break;
                case "--sagas": o.Sagas = Next(); break;
                case "--saga-schema": o.SagaSchema = Next(); break;
                case "--keep-schema": o.KeepSchema = true; break;
                case "--run-dir": o.RunDirectory = Path.GetFullPath(Next()); break;
                case "-h" or "--help": throw new HelpRequestedException();
                default: throw new ArgumentException($"unknown chaos option {args[i]}");
            }
        }
        if (!File.Exists(o.ServiceDll))
            throw new ArgumentException($"--service-dll missing or not found: '{o.ServiceDll}'");
        if (!File.Exists(o.Worker))
            throw new ArgumentException($"--worker missing or not found: '{o.Worker}'");
        if (string.IsNullOrWhiteSpace(o.Sagas))
            throw new ArgumentException("--sagas (an Npgsql connection string) is required");
        if (o.IsCluster)
        {
            if (brokerRestartsGiven && o.BrokerRestarts > 0)
                throw new ArgumentException("--broker-restarts is the single broker's fault; on a cluster use --node-kills / --node-stops");
            o.BrokerRestarts = 0;
            if (o.ClusterNodes.Count < 2)
                throw new ArgumentException("--cluster-urls needs at least 2 nodes");
            if (o.NodeKills + o.NodeStops > 0 && (o.ClusterScript is null || !File.Exists(o.ClusterScript)))
                throw new ArgumentException($"--cluster-script missing or not found: '{o.ClusterScript}' (needed for --node-kills / --node-stops)");
            if (o.KillNode is { } k && (k < 1 || k > o.ClusterNodes.Count))
                throw new ArgumentException($"--kill-node must be 1..{o.ClusterNodes.Count} or busiest");
            if (o.NodeDownSeconds.Min < 0 || o.NodeDownSeconds.Max < o.NodeDownSeconds.Min)
                throw new ArgumentException("--node-down-seconds must be A..B with 0 <= A <= B");
        }
        else if (o.NodeKills + o.NodeStops > 0)
            throw new ArgumentException("--node-kills / --node-stops need a cluster (--cluster-urls; bash bench/soak.sh chaos --cluster 3)");
        if (o.BrokerRestarts > 0 && (o.RabbitMqScript is null || !File.Exists(o.RabbitMqScript)))
            throw new ArgumentException($"--rabbitmq-script missing or not found: '{o.RabbitMqScript}' (needed for --broker-restarts)");
        if (o.Replicas < 2)
            throw new ArgumentException("--replicas must be at least 2 (a partitioned or killed replica's work needs a peer)");
        if (o.Partitions > 0 && o.PartitionLength <= o.StaleAfter + o.Heartbeat)
            Console.Error.WriteLine($"[chaos] note: a {o.PartitionLength.TotalSeconds:F0} s cut is no longer than StaleAfter + HeartbeatInterval: peers will not presume the replica gone");
        return o;
    }

    /// <summary>The service settings every replica gets (besides its instance id, broker URL and marker file).</summary>
    public Dictionary<string, string> ServiceSettings() => new()
    {
        ["ConnectionStrings__Sagas"] = Sagas,
        ["Runner__SagaSchema"] = SagaSchema,
        ["Runner__StaleAfter"] = StaleAfter.ToString("c", CultureInfo.InvariantCulture),
        ["Runner__HeartbeatInterval"] = Heartbeat.ToString("c", CultureInfo.InvariantCulture),
        ["Runner__RecoveryInterval"] = Recovery.ToString("c", CultureInfo.InvariantCulture),
        ["Runner__ShutdownGrace"] = "00:00:05",
        ["Runner__KillGrace"] = "00:00:02",
    };
}
