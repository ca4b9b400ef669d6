using System.Collections.Concurrent;
using System.Diagnostics;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using RunnerService.Contracts;
using RunnerService.Hosting;
using RunnerService.Telemetry;
using RunnerService.Worker;

namespace RunnerService.Processes;

/// <summary>
/// Starts worker processes, knows every live one (running or paused), and makes sure none outlives the service:
/// on stop it kills what is left; if the service dies, the workers' parent-death signal does the same.
/// </summary>
sealed class WorkerSupervisor(IOptions<RunnerOptions> options, ILogger<WorkerSupervisor> logger) : IHostedService, IDisposable
{
    readonly ProcessSpawner _spawner = new();
    readonly ConcurrentDictionary<Guid, WorkerSession> _sessions = new();
    readonly RunnerOptions _options = options.Value;
    int _alive;
    int _peakAlive;

    /// <summary>The only variables a worker inherits from the service (plus <see cref="RunnerOptions.WorkerEnvironment"/>).</summary>
    static readonly string[] InheritedVariables =
    [
        "PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "DOTNET_ROOT",
        // Where workers export their own spans (OTLP/HTTP); see docs/telemetry.md.
        "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_SERVICE_NAME",
    ];

    /// <summary>Worker processes alive right now (running or paused).</summary>
    public int Alive => Volatile.Read(ref _alive);

    /// <summary>Most worker processes alive at once since start.</summary>
    public int PeakAlive => Volatile.Read(ref _peakAlive);

    public ICollection<WorkerSession> Sessions => _sessions.Values;

    public bool TryGet(Guid invocationId, out WorkerSession session) => _sessions.TryGetValue(invocationId, out session!);

    readonly ConcurrentDictionary<Guid, byte> _claims = new();

    /// <summary>
    /// Claims an invocation id for one delivery: false while another delivery of the same id is being handled or its
    /// worker lives (running or paused) here — a duplicate must not run a second time at once.
    /// </summary>
    public bool TryClaim(Guid invocationId) => _claims.TryAdd(invocationId, 0);

    public bool IsClaimed(Guid invocationId) => _claims.ContainsKey(invocationId);

    /// <summary>Gives up a claim whose delivery ended without leaving a live worker behind.</summary>
    public void ReleaseClaim(Guid invocationId)
    {
        if (!_sessions.ContainsKey(invocationId))
            _claims.TryRemove(invocationId, out _);
    }

    /// <summary>Descriptors kept free for everything else (broker and database connections, HTTP, logs).</summary>
    const ulong ReservedFiles = 512;

    /// <summary>Most live workers the open-file limit allows (0: unknown, no check).</summary>
    int _workerRoom;

    readonly ConcurrentQueue<WorkerPipes> _warm = new();
    readonly ConcurrentStack<WorkerPipes> _reusable = new();
    int _warming;
    volatile bool _stopping;

    /// <summary>
    /// Starts the worker for one invocation: in reuse mode an idle worker that finished an earlier invocation, else a
    /// pre-spawned idle worker when the warm pool has one (its start-up is then off the latency path), else a fresh
    /// process. Without reuse mode (the default) every process runs this one invocation only.
    /// </summary>
    public async Task<WorkerSession> StartAsync(RunInvocation invocation, int attempt)
    {
        using var spawn = RunnerActivitySource.StartSpawn(invocation);
        WorkerPipes? pipes = null;
        while (pipes is null && _reusable.TryPop(out var used))
        {
            if (!used.Exited.IsCompleted)
                pipes = used;
        }
        while (pipes is null && _warm.TryDequeue(out var idle))
        {
            if (!idle.Exited.IsCompleted)
                pipes = idle;
            else
                Discard(idle);
        }
        if (pipes is null)
        {
            // Stay clear of the open-file limit: each live worker holds three pipe ends here, and a process start
            // that runs out of descriptors half-way was seen to corrupt other workers' pipes. Reported as EMFILE,
            // which the caller treats as a shortage to wait out.
            if (_workerRoom > 0 && Alive >= _workerRoom)
                throw new System.ComponentModel.Win32Exception(24, $"{Alive} live workers fill the room the open-file limit leaves ({_workerRoom}); waiting for some to end");
            pipes = await SpawnAsync().ConfigureAwait(false);
        }
        Replenish();

        var offerReuse = _options.MaxInvocationsPerProcess > 1 && pipes.Runs + 1 < _options.MaxInvocationsPerProcess;
        var session = new WorkerSession(pipes, invocation, attempt,
            invocation.Timeout is { } t && t > TimeSpan.Zero ? t : _options.DefaultTimeout, offerReuse, logger);
        _sessions[invocation.InvocationId] = session;
        return session;
    }

    async Task<WorkerPipes> SpawnAsync()
    {
        var startInfo = new ProcessStartInfo(_options.EffectiveWorkerCommand)
        {
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var argument in _options.WorkerArguments)
            startInfo.ArgumentList.Add(argument);
        // A minimal environment: the service's own settings (broker credentials, connection strings) never reach a task.
        startInfo.Environment.Clear();
        foreach (var name in InheritedVariables)
        {
            if (Environment.GetEnvironmentVariable(name) is { } value)
                startInfo.Environment[name] = value;
        }
        foreach (var (name, value) in _options.WorkerEnvironment)
            startInfo.Environment[name] = value;
        startInfo.Environment[WorkerHost.ParentPidVariable] = Environment.ProcessId.ToString(System.Globalization.CultureInfo.InvariantCulture);
        // Workers are short-lived: skip tiered-PGO instrumentation, it only costs start-up time.
        startInfo.Environment["DOTNET_TieredPGO"] = "0";

        var process = await _spawner.StartAsync(startInfo).ConfigureAwait(false);
        UpdatePeak(Interlocked.Increment(ref _alive));
        var pipes = new WorkerPipes(process, _options.MaxMessageBytes);
        process.ErrorDataReceived += (_, e) =>
        {
            if (e.Data is not null && pipes.Current is { } current)
                WorkerLog.WorkerStderr(logger, current.InvocationId, current.Invocation.TaskName, pipes.Pid, e.Data);
        };
        process.BeginErrorReadLine();
        _ = pipes.Exited.ContinueWith(_ =>
        {
            Interlocked.Decrement(ref _alive);
            RunnerMetrics.WorkerExited(pipes.ExitCode);
            process.Dispose();
        }, TaskScheduler.Default);
        return pipes;
    }

    /// <summary>Tops the warm pool up to <see cref="RunnerOptions.WarmWorkers"/> idle workers, in the background.</summary>
    void Replenish()
    {
        while (!_stopping && _warm.Count + Volatile.Read(ref _warming) < _options.WarmWorkers && (_workerRoom == 0 || Alive < _workerRoom))
        {
            Interlocked.Increment(ref _warming);
            _ = Task.Run(async () =>
            {
                try
                {
                    var process = await SpawnAsync().ConfigureAwait(false);
                    if (_stopping)
                        Discard(process);
                    else
                        _warm.Enqueue(process);
                }
                catch (Exception ex) when (ex is System.ComponentModel.Win32Exception or IOException or InvalidOperationException)
                {
                    WorkerLog.WarmSpawnFailed(logger, ex);
                }
                finally
                {
                    Interlocked.Decrement(ref _warming);
                }
            });
        }
    }

    /// <summary>Ends an idle pooled worker that will not run anything more: end of stdin, then a kill if it lingers.</summary>
    static void Discard(WorkerPipes pipes)
    {
        pipes.Current = null;
        pipes.CloseStdin();
        _ = pipes.Exited.WaitAsync(TimeSpan.FromSeconds(5)).ContinueWith(t =>
        {
            if (t.IsFaulted)
                pipes.Kill();
        }, TaskScheduler.Default);
    }

    /// <summary>Forgets a session whose worker has ended.</summary>
    public void Remove(WorkerSession session, bool finished = true)
    {
        if (_sessions.TryRemove(new KeyValuePair<Guid, WorkerSession>(session.InvocationId, session)))
        {
            if (finished)
                RememberFinished(session.InvocationId, session.Attempt);
            _claims.TryRemove(session.InvocationId, out _);
            if (session.WorkerIdleAfterFinal)
                Recycle(session.Pipes);
        }
    }

    /// <summary>Reuse mode: an idle worker goes back to the pool for the next invocation (at most one per slot).</summary>
    void Recycle(WorkerPipes pipes)
    {
        pipes.Current = null;
        if (_stopping || pipes.Exited.IsCompleted || _reusable.Count >= _options.EffectiveSlots)
            Discard(pipes);
        else
        {
            _reusable.Push(pipes);
            if (_stopping)
                pipes.Kill(); // the stop may have emptied the pool just before this push
        }
    }

    static readonly TimeSpan FinishedMemory = TimeSpan.FromMinutes(5);
    const int FinishedCapacity = 200_000;
    readonly Lock _finishedLock = new();
    readonly Dictionary<Guid, (DateTime At, int Attempt)> _finished = [];
    readonly Queue<(Guid Id, DateTime At)> _finishedOrder = new();

    /// <summary>
    /// Remembers a finished attempt for <see cref="FinishedMemory"/> (at most <see cref="FinishedCapacity"/> of them,
    /// about 10 MB); entries are forgotten oldest first, so each call costs O(1) however many are remembered.
    /// </summary>
    void RememberFinished(Guid invocationId, int attempt)
    {
        var now = DateTime.UtcNow;
        lock (_finishedLock)
        {
            _finished[invocationId] = (now, attempt);
            _finishedOrder.Enqueue((invocationId, now));
            while (_finishedOrder.TryPeek(out var oldest) && (now - oldest.At > FinishedMemory || _finishedOrder.Count > FinishedCapacity))
            {
                _finishedOrder.Dequeue();
                // A later attempt of the same invocation may have renewed the entry: that one stays.
                if (_finished.TryGetValue(oldest.Id, out var entry) && entry.At == oldest.At)
                    _finished.Remove(oldest.Id);
            }
        }
    }

    /// <summary>
    /// True when this replica ran <paramref name="attempt"/> (or a later attempt) of the invocation to its end within the
    /// last minutes: a redelivery of that attempt (its delivery was lost with the channel) must not run it again, and
    /// its final events may still be on their way to the saga (so it is not an orphan).
    /// </summary>
    public bool FinishedHere(Guid invocationId, int attempt)
    {
        lock (_finishedLock)
            return _finished.TryGetValue(invocationId, out var finished) && finished.Attempt >= attempt && DateTime.UtcNow - finished.At < FinishedMemory;
    }

    void UpdatePeak(int alive)
    {
        int peak;
        while (alive > (peak = Volatile.Read(ref _peakAlive)) && Interlocked.CompareExchange(ref _peakAlive, alive, peak) != peak)
        {
        }
    }

    public Task StartAsync(CancellationToken cancellationToken)
    {
        var openFiles = OpenFileLimit.RaiseToHardLimit();
        if (openFiles > 0)
        {
            _workerRoom = (int)Math.Min(int.MaxValue, openFiles > ReservedFiles ? (openFiles - ReservedFiles) / 3 : 1);
            WorkerLog.OpenFileLimit(logger, openFiles, (ulong)_workerRoom);
        }
        Replenish();
        return Task.CompletedTask;
    }

    /// <summary>Kills every worker still alive when the host stops, and waits until each is gone.</summary>
    public async Task StopAsync(CancellationToken cancellationToken)
    {
        _stopping = true;
        var idle = new List<WorkerPipes>();
        while (_warm.TryDequeue(out var fresh))
            idle.Add(fresh);
        while (_reusable.TryPop(out var used))
            idle.Add(used);
        foreach (var pipes in idle)
            pipes.Kill();
        var left = _sessions.Values.ToArray();
        foreach (var session in left)
        {
            WorkerLog.KillingOnStop(logger, session.Pid, session.InvocationId, session.Invocation.TaskName, session.State);
            session.Kill();
        }
        await Task.WhenAll(left.Select(s => s.Exited).Concat(idle.Select(p => p.Exited))).WaitAsync(cancellationToken).ConfigureAwait(false);
    }

    public void Dispose() => _spawner.Dispose();
}
