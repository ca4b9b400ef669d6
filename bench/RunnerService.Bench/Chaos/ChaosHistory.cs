using System.Collections.Concurrent;
using System.Text.Json;
using RunnerService.Contracts;

namespace RunnerService.Bench.Chaos;

/// <summary>A root the run submitted, and what its result must be.</summary>
/// <param name="ResultProperty">The result is an object with this numeric property; null: the result is a number.</param>
/// <param name="ExpectedNumber">The number expected there; null: any number.</param>
sealed record RootPlan(Guid Id, string TaskName, string Arguments, string? ResultProperty, long? ExpectedNumber)
{
    public DateTimeOffset SubmittedAt { get; set; }

    public bool ResultIsRight(JsonElement? result)
    {
        if (result is not { } r)
            return false;
        if (ResultProperty is not null)
        {
            if (r.ValueKind != JsonValueKind.Object || !r.TryGetProperty(ResultProperty, out var p))
                return false;
            r = p;
        }
        return r.ValueKind == JsonValueKind.Number && (ExpectedNumber is null || r.GetInt64() == ExpectedNumber);
    }
}

/// <summary>One fault the run injected; <see cref="EndedAt"/> is when it was over (replica ready again, broker up, link healed).</summary>
sealed record FaultRecord(int Number, string Kind, string Target, DateTimeOffset StartedAt)
{
    public DateTimeOffset EndedAt { get; set; }
    public string Detail { get; set; } = "";
}

/// <summary>A worker process found alive where none may be.</summary>
sealed record WorkerLeft(string When, int Pid, int PPid, string State);

/// <summary>Two live worker processes of one invocation at the same time, seen from /proc (not from the markers).</summary>
sealed record ConcurrentProcesses(Guid Id, string TaskName, int FirstPid, int FirstAttempt, string FirstRunner, int SecondPid, int SecondAttempt,
    string SecondRunner, DateTimeOffset SecondStartedAt, string How);

/// <summary>
/// What the run saw: the roots it submitted, every InvocationStarted and InvocationCompleted from its own durable queue
/// (a broker redelivery to that queue, same message id, is counted once), the faults, and workers found alive where
/// none may be. Events are also appended to events.jsonl in the run folder.
/// </summary>
sealed class ChaosHistory(string runDirectory, ProcWatch watch) : IDisposable
{
    readonly ConcurrentDictionary<Guid, byte> _messageIds = new();
    readonly StreamWriter _events = new(Path.Combine(runDirectory, "events.jsonl"), append: false) { AutoFlush = false };
    readonly object _write = new();
    int _rootsCompleted, _started, _completed, _redelivered, _afterFreeze;
    volatile bool _frozen;

    public ConcurrentDictionary<Guid, RootPlan> Roots { get; } = new();
    public ConcurrentDictionary<Guid, List<InvocationStarted>> Started { get; } = new();
    public ConcurrentDictionary<Guid, List<InvocationCompleted>> Completed { get; } = new();
    public ConcurrentQueue<FaultRecord> Faults { get; } = new();
    public ConcurrentQueue<WorkerLeft> WorkersLeft { get; } = new();
    public ConcurrentQueue<ConcurrentProcesses> Concurrent { get; } = new();

    public int RootsCompleted => Volatile.Read(ref _rootsCompleted);
    public int StartedEvents => Volatile.Read(ref _started);
    public int CompletedEvents => Volatile.Read(ref _completed);
    public int Redelivered => Volatile.Read(ref _redelivered);

    /// <summary>Events that arrived after <see cref="Freeze"/> (logged to events.jsonl, not judged).</summary>
    public int AfterFreeze => Volatile.Read(ref _afterFreeze);

    /// <summary>
    /// Ends the judged history, when the final saga snapshot is taken: what the final stop of the replicas causes
    /// (a stop reroutes what its replica still holds) is not part of the run.
    /// </summary>
    public void Freeze() => _frozen = true;

    /// <summary>When the last root got its first completion.</summary>
    public DateTimeOffset LastRootCompletedAt { get; private set; }

    bool FirstTime(Guid? messageId)
    {
        if (_frozen)
        {
            Interlocked.Increment(ref _afterFreeze);
            return false;
        }
        if (messageId is { } m && !_messageIds.TryAdd(m, 0))
        {
            Interlocked.Increment(ref _redelivered);
            return false;
        }
        return true;
    }

    public void OnStarted(InvocationStarted m, Guid? messageId)
    {
        if (!FirstTime(messageId))
        {
            if (_frozen)
                Append("started-after-the-end", messageId, m);
            return;
        }
        Interlocked.Increment(ref _started);
        Append("started", messageId, m);
        watch.Track(m.ProcessId, m.StartedAt);
        var list = Started.GetOrAdd(m.InvocationId, _ => []);
        lock (list)
        {
            foreach (var earlier in list)
            {
                if (earlier.ProcessId == m.ProcessId)
                    continue;
                // The worker that started first (by its own start time: a Started event can arrive late, after a
                // partition) still alive now, or seen alive after the other one started: they overlapped.
                var (first, second) = earlier.StartedAt <= m.StartedAt ? (earlier, m) : (m, earlier);
                string? how = null;
                if (watch.IsAliveSame(first.ProcessId, first.StartedAt))
                    how = $"the earlier worker was still alive (state {ProcWatch.State(first.ProcessId)}) when the later Started arrived";
                else if (watch.LastSeenAlive(first.ProcessId, first.StartedAt) is { } seen && seen > second.StartedAt)
                    how = $"the earlier worker was seen alive at {seen:HH:mm:ss.fff}, after the later start";
                if (how is not null)
                    Concurrent.Enqueue(new ConcurrentProcesses(m.InvocationId, m.TaskName, first.ProcessId, first.Attempt, first.RunnerInstance,
                        second.ProcessId, second.Attempt, second.RunnerInstance, second.StartedAt, how));
            }
            list.Add(m);
        }
    }

    public void OnCompleted(InvocationCompleted m, Guid? messageId)
    {
        if (!FirstTime(messageId))
        {
            if (_frozen)
                Append("completed-after-the-end", messageId, m);
            return;
        }
        Interlocked.Increment(ref _completed);
        Append("completed", messageId, m);
        var list = Completed.GetOrAdd(m.InvocationId, _ => []);
        lock (list)
        {
            list.Add(m);
            if (list.Count == 1 && Roots.ContainsKey(m.InvocationId))
            {
                Interlocked.Increment(ref _rootsCompleted);
                LastRootCompletedAt = DateTimeOffset.UtcNow;
            }
        }
    }

    void Append<T>(string kind, Guid? messageId, T message)
    {
        var line = JsonSerializer.Serialize(new { kind, messageId, receivedAt = DateTimeOffset.UtcNow, message });
        lock (_write)
            _events.WriteLine(line);
    }

    public void Flush()
    {
        lock (_write)
            _events.Flush();
    }

    public void Dispose()
    {
        lock (_write)
            _events.Dispose();
    }
}
