using System.ComponentModel.DataAnnotations;

namespace RunnerService.Hosting;

/// <summary>The <c>Runner</c> configuration section. Every default is documented in README's configuration table.</summary>
public sealed class RunnerOptions
{
    public const string SectionName = "Runner";

    /// <summary>Most attempts an invocation may ask for (<c>MaxAttempts</c>) or be given by default.</summary>
    public const int MaxAttemptsLimit = 100;

    /// <summary>
    /// Highest accepted <see cref="MaxTimeout"/>: .NET timers (CancellationTokenSource) take at most about 49.7 days,
    /// and a longer timeout would throw only after its worker had started.
    /// </summary>
    public static readonly TimeSpan TimeoutCeiling = TimeSpan.FromDays(49);

    /// <summary>Exact number of process slots. When unset: max(<see cref="MinSlots"/>, CPU count).</summary>
    [Range(1, 4096)]
    public int? Slots { get; set; }

    /// <summary>Lower bound for the slot count when <see cref="Slots"/> is unset.</summary>
    [Range(1, 4096)]
    public int MinSlots { get; set; } = 2;

    /// <summary>
    /// The worker executable. Unset: the stock worker next to the service, its Native AOT build
    /// (<see cref="AotWorkerPath"/>) when present, else its JIT build (see <see cref="DefaultWorkerCommandIn"/>).
    /// </summary>
    public string? WorkerCommand { get; set; }

    /// <summary>Arguments passed to the worker executable.</summary>
    public string[] WorkerArguments { get; set; } = [];

    /// <summary>
    /// Extra environment variables for workers. Workers otherwise get only PATH, HOME, LANG, LC_*, TZ, TMPDIR and
    /// DOTNET_ROOT from the service, never its connection strings or credentials.
    /// </summary>
    public Dictionary<string, string> WorkerEnvironment { get; set; } = [];

    /// <summary>
    /// Idle workers kept pre-spawned (each waiting on stdin for its one invocation), so process start-up leaves the
    /// latency path. Each still runs exactly one invocation. 0 (the default) spawns on demand.
    /// </summary>
    [Range(0, 1024)]
    public int WarmWorkers { get; set; }

    /// <summary>
    /// When a worker is stopped early (timeout, shutdown, a crash that leaves helpers behind), how long its process
    /// group has between SIGTERM and SIGKILL. Zero kills at once.
    /// </summary>
    public TimeSpan KillGrace { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>
    /// Longest time a worker may take to read a line written to its stdin (its invocation, a resume). One that does
    /// not read within it is killed and the invocation fails with ProtocolViolation.
    /// </summary>
    public TimeSpan StdinTimeout { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>
    /// Unprivileged user the workers run as (the service must start as root). Unset: workers run as the service's
    /// own user and can read its environment and files (docs/operations.md).
    /// </summary>
    public string? WorkerUser { get; set; }

    /// <summary>Identifies this replica; names its own queue. Defaults to the host name.</summary>
    public string? InstanceId { get; set; }

    /// <summary>Run-time limit of an invocation that does not set its own.</summary>
    public TimeSpan DefaultTimeout { get; set; } = TimeSpan.FromHours(1);

    /// <summary>Longest <c>Timeout</c> a message may ask for; a longer one is rejected as invalid. At most <see cref="TimeoutCeiling"/>.</summary>
    public TimeSpan MaxTimeout { get; set; } = TimeSpan.FromDays(7);

    /// <summary>Most attempts of an invocation that does not set <c>MaxAttempts</c> (1 = never retried).</summary>
    [Range(1, MaxAttemptsLimit)]
    public int DefaultMaxAttempts { get; set; } = 1;

    /// <summary>
    /// Error types retried while attempts remain (a task's own error only when it marks itself retryable). Unset: the
    /// defaults below. Set, it replaces them (null here, so the configuration binder has nothing to append to); one
    /// empty entry (<c>Runner__RetryableErrors__0=</c>) means none.
    /// </summary>
    public string[]? RetryableErrors { get; set; }

    public static readonly IReadOnlyList<string> DefaultRetryableErrors = ["WorkerExited", "WorkerKilled", "TimedOut"];

    /// <summary>What <see cref="RetryableErrors"/> amounts to.</summary>
    public IReadOnlyList<string> EffectiveRetryableErrors =>
        RetryableErrors is null ? DefaultRetryableErrors : [.. RetryableErrors.Where(e => !string.IsNullOrWhiteSpace(e))];

    /// <summary>Delay before the second attempt; doubles for each further attempt, up to <see cref="MaxRetryDelay"/>.</summary>
    public TimeSpan RetryDelay { get; set; } = TimeSpan.FromSeconds(1);

    public TimeSpan MaxRetryDelay { get; set; } = TimeSpan.FromSeconds(60);

    /// <summary>On SIGTERM, how long running invocations may go on before they are killed and rerouted.</summary>
    public TimeSpan ShutdownGrace { get; set; } = TimeSpan.FromSeconds(20);

    /// <summary>
    /// Longest time a running invocation's delivery stays unacknowledged. Keep it below the broker's consumer_timeout
    /// (30 min by default): past it the delivery is acknowledged and the saga owns the still-running invocation.
    /// </summary>
    public TimeSpan DeliveryHoldLimit { get; set; } = TimeSpan.FromMinutes(20);

    /// <summary>
    /// A running invocation that has neither ended nor waited by then is recorded in the saga (owner, process,
    /// arguments): <c>status</c> shows it running, and the recovery check can run it again if this replica dies
    /// after its delivery is gone. Shorter ones reach the saga only with their completion (they come back from the
    /// broker if the replica dies first); an invocation that waits is recorded before it pauses.
    /// </summary>
    public TimeSpan TrackAfter { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>
    /// Finished saga records (the invocation's history, result, error) are removed this long after their last change,
    /// except while an open invocation still waits for one. The sweep runs every quarter of it (1 s to 1 h).
    /// </summary>
    public TimeSpan RetainFinished { get; set; } = TimeSpan.FromDays(7);

    /// <summary>
    /// At most one <c>InvocationProgress</c> event per invocation per interval: the first report at once, then the
    /// latest of each interval. A worker may report as often as it likes.
    /// </summary>
    public TimeSpan ProgressInterval { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>
    /// Reuse mode, off by default (1: a fresh process per invocation). Above 1, a worker that says it can (workers
    /// built on the worker SDK do) runs up to this many invocations one after another before it is replaced, like
    /// prefork's max-tasks-per-child: faster, but invocations then share a process (static state, leaked memory,
    /// open files). A worker that failed, timed out or was killed is never reused.
    /// </summary>
    [Range(1, 1_000_000)]
    public int MaxInvocationsPerProcess { get; set; } = 1;

    /// <summary>
    /// How long the runner keeps trying to publish an invocation's own events (started, sub-invocations, waits,
    /// completion) while the broker is unreachable, before it gives up on that invocation.
    /// </summary>
    public TimeSpan PublishPatience { get; set; } = TimeSpan.FromMinutes(30);

    /// <summary>How often this replica publishes its heartbeat.</summary>
    public TimeSpan HeartbeatInterval { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>A replica not heard from for this long is presumed gone; its invocations are recovered.</summary>
    public TimeSpan StaleAfter { get; set; } = TimeSpan.FromSeconds(15);

    /// <summary>How often the recovery check looks for invocations owned by lost replicas.</summary>
    public TimeSpan RecoveryInterval { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>Largest accepted protocol line from a worker (and so the largest result), in bytes.</summary>
    [Range(1024, 256 * 1024 * 1024)]
    public int MaxMessageBytes { get; set; } = 1024 * 1024;

    /// <summary>Largest accepted <c>Arguments</c> of an invocation message, in bytes of JSON.</summary>
    [Range(16, 256 * 1024 * 1024)]
    public int MaxArgumentsBytes { get; set; } = 1024 * 1024;

    /// <summary>
    /// Distinct task names that get their own <c>task</c> label on metrics; later ones are counted as <c>other</c>.
    /// Task names come from messages, and every label value is a series kept for the process's life.
    /// </summary>
    [Range(0, 100_000)]
    public int MaxTaskLabels { get; set; } = 100;

    /// <summary>Loopback URL of the health and status endpoints.</summary>
    public string HttpUrl { get; set; } = "http://127.0.0.1:5690";

    /// <summary>
    /// Declare the service's durable queues (invocations, saga, status, each replica's own queue, and their error
    /// queues) as quorum queues, replicated across a RabbitMQ cluster. Unset: quorum when <c>ConnectionStrings:RabbitMq</c>
    /// lists several nodes, classic otherwise. Must be chosen before the queues first exist: RabbitMQ cannot change a
    /// queue's type.
    /// </summary>
    public bool? QuorumQueues { get; set; }

    /// <summary>
    /// On quorum queues: deliveries of one message before the broker moves it to the queue's error queue
    /// (<c>x-delivery-limit</c>), a bound on a message that keeps coming back, e.g. one that kills every replica that
    /// takes it. 0 = no limit.
    /// </summary>
    [Range(0, 1000)]
    public int DeliveryLimit { get; set; } = 20;

    /// <summary>The queue all replicas consume <c>RunInvocation</c> from.</summary>
    public string InvocationQueue { get; set; } = "run-invocation";

    public int EffectiveSlots => Slots ?? Math.Max(MinSlots, Environment.ProcessorCount);

    public string EffectiveInstanceId => string.IsNullOrWhiteSpace(InstanceId) ? Environment.MachineName.ToLowerInvariant() : InstanceId;

    public string EffectiveWorkerCommand => string.IsNullOrWhiteSpace(WorkerCommand) ? DefaultWorkerCommand.Value : WorkerCommand;

    /// <summary>
    /// Where the stock worker's Native AOT build sits, relative to the service's folder: the layout of deploy/Dockerfile
    /// (<c>/app/worker/WorkerProcess</c>) and of a local build (deploy/local/publish-aot-worker.sh writes
    /// <c>artifacts/aot-worker/WorkerProcess</c>, and building the service copies it here).
    /// </summary>
    public static readonly string AotWorkerPath = Path.Combine("worker", "WorkerProcess");

    /// <summary>The stock worker's JIT build, which the service's own build always puts next to it.</summary>
    public static readonly string JitWorkerPath = "WorkerProcess";

    // Looked up once: the spawn path reads EffectiveWorkerCommand for every worker.
    static readonly Lazy<string> DefaultWorkerCommand = new(() => DefaultWorkerCommandIn(AppContext.BaseDirectory));

    /// <summary>
    /// The default worker for a service in <paramref name="serviceDirectory"/>: the Native AOT stock worker when it
    /// is there (it starts in ~3 ms instead of ~80 ms; bench/RESULTS.md), else the JIT one.
    /// </summary>
    public static string DefaultWorkerCommandIn(string serviceDirectory)
    {
        var aot = Path.Combine(serviceDirectory, AotWorkerPath);
        return File.Exists(aot) ? aot : Path.Combine(serviceDirectory, JitWorkerPath);
    }

    /// <summary>True when the worker is the JIT build of the stock worker next to the service, default or configured.</summary>
    public bool RunsJitStockWorker => EffectiveWorkerCommand == Path.Combine(AppContext.BaseDirectory, JitWorkerPath);

    /// <summary>The replica's own queue, for resumes and control messages.</summary>
    public string InstanceQueue => $"runner-instance-{EffectiveInstanceId}";

    /// <summary>
    /// Where others send to the replica's own queue: the queue's exchange, so a sender declares nothing but that
    /// exchange. A <c>queue:</c> address would also declare the queue, with arguments that differ from a quorum queue's
    /// (its dead-letter exchange), and the broker refuses such a declaration.
    /// </summary>
    public Uri InstanceAddress => new($"exchange:{InstanceQueue}");

    /// <summary>The replica's temporary queue of other replicas' heartbeats (auto-deleted with the replica).</summary>
    public string HeartbeatQueue => $"runner-heartbeats-{EffectiveInstanceId}";

    /// <summary>Whether the service's durable queues are quorum queues, for a broker given as <paramref name="broker"/>.</summary>
    internal bool UsesQuorumQueues(BrokerConnection broker) => QuorumQueues ?? broker.IsCluster;
}
