using System.Diagnostics;
using System.Diagnostics.Metrics;
using RunnerService.Contracts;
using RunnerService.Processes;
using RunnerService.Slots;

namespace RunnerService.Telemetry;

/// <summary>
/// The service's own instruments (Meter "RunnerService"). Names are stable: dashboards and alerts query them;
/// docs/telemetry.md lists each one with its Prometheus name. Every <c>task</c> tag goes through <see cref="TaskLabels"/>.
/// </summary>
static class RunnerMetrics
{
    public const string MeterName = "RunnerService";

    /// <summary>Bucket bounds in seconds, from a millisecond spawn to an hour-long run (the SDK's defaults suit milliseconds).</summary>
    public static readonly double[] SecondsBuckets =
        [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600];

    static readonly Meter Meter = new(MeterName, "1.0");
    static readonly InstrumentAdvice<double> SecondsAdvice = new() { HistogramBucketBoundaries = SecondsBuckets };

    static readonly Counter<long> Started = Meter.CreateCounter<long>("runner.invocations.started", "{invocation}",
        "Invocations whose worker process was started (each attempt and each fresh run counts once).");
    static readonly Counter<long> Completed = Meter.CreateCounter<long>("runner.invocations.completed", "{invocation}",
        "Invocations that ended on this replica, by task and final status (rejected messages included; a task name that breaks the rule is counted as other).");
    static readonly Histogram<double> QueueTime = Meter.CreateHistogram("runner.invocation.queue_time", "s",
        "From submission to the worker's start.", advice: SecondsAdvice);
    static readonly Histogram<double> RunTime = Meter.CreateHistogram("runner.invocation.run_time", "s",
        "Time a worker spent running (paused time excluded), recorded at completion.", advice: SecondsAdvice);
    static readonly Histogram<double> PausedTime = Meter.CreateHistogram("runner.invocation.paused_time", "s",
        "How long a worker stayed paused waiting for sub-invocations, recorded at each resume.", advice: SecondsAdvice);
    static readonly Histogram<double> SpawnTime = Meter.CreateHistogram("runner.worker.spawn_time", "s",
        "Time to start a worker process.", advice: SecondsAdvice);
    static readonly Counter<long> Exits = Meter.CreateCounter<long>("runner.worker.exits", "{process}",
        "Worker processes that ended, by exit code or by the signal that killed them.");
    static readonly Counter<long> Poison = Meter.CreateCounter<long>("runner.messages.poison", "{message}",
        "Messages that can never run and went to the error queue, by reason.");
    static readonly Counter<long> Recoveries = Meter.CreateCounter<long>("runner.recoveries", "{invocation}",
        "Invocations of a lost replica that this replica asked the saga to run again.");

    static SlotPool? s_slots;
    static WorkerSupervisor? s_supervisor;
    static TaskLabels s_taskLabels = new(new Hosting.RunnerOptions().MaxTaskLabels);

    static RunnerMetrics()
    {
        Meter.CreateObservableGauge("runner.slots.total", () => Observe(s_slots?.Total), "{slot}", "Process slots of this replica.");
        Meter.CreateObservableGauge("runner.slots.busy", () => Observe(s_slots?.Busy), "{slot}", "Slots held by a running worker.");
        Meter.CreateObservableGauge("runner.workers.alive", () => Observe(s_supervisor?.Alive), "{process}", "Worker processes alive, running or paused.");
        Meter.CreateObservableGauge("runner.workers.paused", () => Observe(s_supervisor?.Sessions.Count(s => s.State == WorkerState.Paused)), "{process}",
            "Worker processes paused (SIGSTOP) while they wait for sub-invocations; they hold no slot.");
    }

    static IEnumerable<Measurement<int>> Observe(int? value) => value is { } v ? [new Measurement<int>(v)] : [];

    /// <summary>
    /// Lets the observable gauges read this replica's slot pool and supervisor, and sets the cap on task labels
    /// (<c>Runner:MaxTaskLabels</c>). Called at start, before the bus takes any message.
    /// </summary>
    public static void Bind(SlotPool slots, WorkerSupervisor supervisor, int maxTaskLabels)
    {
        s_slots = slots;
        s_supervisor = supervisor;
        s_taskLabels = new TaskLabels(maxTaskLabels);
    }

    public static void InvocationStarted(string task, TimeSpan queuedFor)
    {
        var tag = new KeyValuePair<string, object?>("task", s_taskLabels.For(task));
        Started.Add(1, tag);
        QueueTime.Record(queuedFor.TotalSeconds, tag);
    }

    /// <summary>Counts a completion; its run time only when a worker ran (<paramref name="pid"/> is not 0).</summary>
    public static void InvocationCompleted(string task, InvocationStatus status, TimeSpan runFor, int pid)
    {
        var tags = new TagList { { "task", s_taskLabels.For(task) }, { "status", StatusName(status) } };
        Completed.Add(1, tags);
        if (pid != 0)
            RunTime.Record(runFor.TotalSeconds, tags);
    }

    public static void InvocationResumed(string task, TimeSpan pausedFor) =>
        PausedTime.Record(pausedFor.TotalSeconds, new KeyValuePair<string, object?>("task", s_taskLabels.For(task)));

    public static void WorkerSpawned(TimeSpan elapsed) => SpawnTime.Record(elapsed.TotalSeconds);

    /// <summary>Counts one ended worker; an exit status above 128 is death by signal (status - 128).</summary>
    public static void WorkerExited(int exitCode) =>
        Exits.Add(1, new KeyValuePair<string, object?>("exit", exitCode > 128 && exitCode < 128 + 65
            ? Signals.Name(exitCode - 128)
            : exitCode.ToString(System.Globalization.CultureInfo.InvariantCulture)));

    public static void PoisonMessage(string reason) => Poison.Add(1, new KeyValuePair<string, object?>("reason", reason));

    public static void Recovered() => Recoveries.Add(1);

    static readonly Counter<long> Stale = Meter.CreateCounter<long>("runner.saga.stale_events", "{event}",
        "Events of an attempt that was no longer the invocation's current one; recorded, never applied");

    public static void StaleEvent(string type) => Stale.Add(1, new KeyValuePair<string, object?>("event", type));

    public static string StatusName(InvocationStatus status) => status switch
    {
        InvocationStatus.Succeeded => "succeeded",
        InvocationStatus.Failed => "failed",
        InvocationStatus.TimedOut => "timed_out",
        InvocationStatus.Cancelled => "cancelled",
        _ => status.ToString().ToLowerInvariant(),
    };
}
