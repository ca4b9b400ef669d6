using System.Collections.Concurrent;
using System.Diagnostics;
using Microsoft.Extensions.Logging;
using RunnerService.Hosting;
using RunnerService.Telemetry;
using RunnerService.Worker;

namespace RunnerService.Processes;

/// <summary>
/// Where worker processes come from: fresh spawns (each in its own process group, as the configured user), the warm
/// pool of pre-spawned idle workers, idle workers kept for reuse, and the descriptor budget they all share.
/// </summary>
sealed class WorkerPool : IDisposable
{
    readonly ProcessSpawner _spawner = new();
    readonly RunnerOptions _options;
    readonly ILogger _logger;
    readonly ConcurrentQueue<WorkerProcess> _warm = new();
    readonly ConcurrentStack<WorkerProcess> _reusable = new();
    readonly string? _setsid;
    readonly WorkerCredentials? _credentials;
    readonly Dictionary<string, string> _environment;
    readonly Func<SpawnedWorker> _startWorker;
    readonly bool _ownGroups;
    int _alive;
    int _peakAlive;
    int _warming;
    volatile bool _stopping;

    /// <summary>Most workers with open pipes the open-file limit allows (0: unknown, no check).</summary>
    /// <summary>Descriptors workers may hold here: the open-file limit less what was open at start and a reserve (0 = unknown).</summary>
    long _budget;
    /// <summary>Descriptors a worker with open pipes holds here besides them: the pidfd <see cref="ChildReaper"/> watches (a parked one holds none).</summary>
    readonly int _watchDescriptors;

    /// <summary>The only variables a worker inherits from the service (plus <see cref="RunnerOptions.WorkerEnvironment"/>).</summary>
    static readonly string[] InheritedVariables =
    [
        "PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "DOTNET_ROOT",
        // Where workers export their own spans (OTLP/HTTP); see docs/telemetry.md.
        "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_SERVICE_NAME",
    ];

    public WorkerPool(RunnerOptions options, ILogger logger)
    {
        _options = options;
        _logger = logger;
        Timings = new WorkerTimings(options.KillGrace, options.StdinTimeout);
        _credentials = WorkerCredentials.Resolve(options);
        _environment = WorkerEnvironment();
        if (_credentials is null && NativeSpawn.Supported)
        {
            _startWorker = new NativeSpawn(ResolveCommand(options.EffectiveWorkerCommand), options.WorkerArguments, _environment).Start;
            _ownGroups = true; // POSIX_SPAWN_SETSID
            _watchDescriptors = 1;
        }
        else
        {
            _setsid = new[] { "/usr/bin/setsid", "/bin/setsid" }.FirstOrDefault(File.Exists);
            _startWorker = StartWithProcess;
            _ownGroups = _setsid is not null;
        }
    }

    public WorkerTimings Timings { get; }

    /// <summary>Worker processes alive right now (running, paused or idle).</summary>
    public int Alive => Volatile.Read(ref _alive);

    /// <summary>Most worker processes alive at once since start.</summary>
    public int PeakAlive => Volatile.Read(ref _peakAlive);

    /// <summary>
    /// Sizes the descriptor budget. Workers with open pipes cost three descriptors here (running, idle, or paused where
    /// /proc cannot reopen pipes), plus, when started through posix_spawn, the pidfd that watches their exit; a parked
    /// worker holds none. Workers with open pipes are bounded by slots, warm workers and the reuse pool, so the budget is
    /// checked against that bound at start: a limit too low for the configuration fails the start clearly rather than
    /// failing invocations later.
    /// </summary>
    public void Start()
    {
        if (_options.RunsJitStockWorker)
            WorkerLog.JitStockWorker(_logger, _options.EffectiveWorkerCommand);
        else
            WorkerLog.WorkerCommand(_logger, _options.EffectiveWorkerCommand);
        if (!_ownGroups)
            WorkerLog.NoProcessGroups(_logger);
        if (_credentials is { } user)
        {
            user.CheckCanRun(_options.EffectiveWorkerCommand, _options.WorkerArguments);
            WorkerLog.WorkerUser(_logger, user.Name, user.Uid, user.Gid);
        }
        var limit = OpenFileLimit.RaiseToHardLimit();
        if (limit == 0)
            return;
        var open = OpenFileLimit.OpenNow();
        // Room for the broker, database and HTTP connections, logs and spawns in flight: a quarter, 64 to 512.
        var reserve = (int)Math.Clamp((long)limit / 4, 64, 512);
        _budget = Math.Max(1, (long)Math.Min(limit, long.MaxValue / 2) - open - reserve);
        var perWorker = 3 + _watchDescriptors;
        var room = (int)Math.Min(int.MaxValue, _budget / perWorker);
        var needed = _options.EffectiveSlots * (_options.MaxInvocationsPerProcess > 1 ? 2 : 1) + _options.WarmWorkers;
        var parking = PipeParkingWorks() ? "paused" : "paused (not here: /proc cannot reopen pipes)";
        WorkerLog.OpenFileLimit(_logger, limit, open, room, perWorker, parking, reserve);
        if (room < needed)
        {
            throw new InvalidOperationException(
                $"The open-file limit ({limit}, {open} open) leaves room for {room} workers with open pipes, but {_options.EffectiveSlots} slots" +
                (_options.WarmWorkers > 0 ? $" and {_options.WarmWorkers} warm workers" : "") +
                (_options.MaxInvocationsPerProcess > 1 ? " with reuse" : "") +
                $" need {needed}: raise the limit (ulimit -n, LimitNOFILE) or lower Runner:Slots / Runner:WarmWorkers");
        }
        Replenish();
    }

    static bool PipeParkingWorks() => OperatingSystem.IsLinux() && Directory.Exists("/proc/self/fd");

    /// <summary>
    /// A worker for one invocation: in reuse mode an idle worker that finished an earlier invocation, else a
    /// pre-spawned idle worker when the warm pool has one (its start-up is then off the latency path), else a fresh
    /// process. Without reuse mode (the default) every process runs one invocation only.
    /// </summary>
    public async Task<WorkerProcess> TakeAsync()
    {
        WorkerProcess? worker = null;
        while (worker is null && _reusable.TryPop(out var used))
        {
            if (!used.Exited.IsCompleted)
                worker = used;
        }
        while (worker is null && _warm.TryDequeue(out var idle))
        {
            if (!idle.Exited.IsCompleted)
                worker = idle;
            else
                Discard(idle);
        }
        if (worker is null)
        {
            // A backstop: with pipe parking the slots bound the workers with open pipes, and the start checked that
            // they fit. Reported as EMFILE, which the caller treats as a shortage to wait out.
            if (NoRoom())
                throw new System.ComponentModel.Win32Exception(24, $"{OpenPipeHolders()} workers with open pipes and {Alive} alive fill the {_budget} descriptors the open-file limit leaves; waiting for some to end");
            worker = await SpawnAsync().ConfigureAwait(false);
        }
        Replenish();
        return worker;
    }

    /// <summary>Paused workers whose pipe ends are closed here (see <see cref="WorkerProcess.Pause"/>).</summary>
    int _parked;

    int OpenPipeHolders() => Alive - Volatile.Read(ref _parked);

    /// <summary>True when one more worker with open pipes would not fit in the descriptor budget (a parked worker holds none).</summary>
    bool NoRoom() => _budget > 0 && (3L + _watchDescriptors) * (OpenPipeHolders() + 1) > _budget;

    /// <summary>
    /// Waits, holding no slot, while workers with open pipes fill the descriptor room. That only happens where paused
    /// workers cannot close their pipe ends (no /proc access to them): new intake then waits for resumes and ends to
    /// free room, instead of holding slots that those resumes need.
    /// </summary>
    public async Task WaitForRoomAsync(CancellationToken cancellationToken)
    {
        while (NoRoom())
            await Task.Delay(RoomPoll, cancellationToken).ConfigureAwait(false);
    }

    static readonly TimeSpan RoomPoll = TimeSpan.FromMilliseconds(100);

    /// <summary>
    /// A relative command where <see cref="Process"/> looks for it, in its order: next to the running executable, then
    /// in the current folder; anything else is left to posix_spawnp's PATH search.
    /// </summary>
    static string ResolveCommand(string command)
    {
        if (Path.IsPathRooted(command))
            return command;
        foreach (var folder in new[] { Path.GetDirectoryName(Environment.ProcessPath), Environment.CurrentDirectory })
        {
            if (folder is not null && File.Exists(Path.Combine(folder, command)))
                return Path.GetFullPath(Path.Combine(folder, command));
        }
        return command;
    }

    /// <summary>The worker's whole environment, built once.</summary>
    Dictionary<string, string> WorkerEnvironment()
    {
        // A minimal environment: the service's own settings (broker credentials, connection strings) never reach a task.
        var environment = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var name in InheritedVariables)
        {
            if (Environment.GetEnvironmentVariable(name) is { } value)
                environment[name] = value;
        }
        if (_credentials is { } owner)
            environment["HOME"] = owner.Home;
        foreach (var (name, value) in _options.WorkerEnvironment)
            environment[name] = value;
        environment[WorkerHost.ParentPidVariable] = Environment.ProcessId.ToString(System.Globalization.CultureInfo.InvariantCulture);
        // Workers are short-lived: skip tiered-PGO instrumentation, it only costs start-up time.
        environment["DOTNET_TieredPGO"] = "0";
        return environment;
    }

    /// <summary>
    /// Starts a worker through <see cref="System.Diagnostics.Process"/>: only for workers that run as another user,
    /// which posix_spawn cannot do, or where <see cref="NativeSpawn"/> does not work.
    /// </summary>
    SpawnedWorker StartWithProcess()
    {
        var startInfo = new ProcessStartInfo(_setsid ?? _options.EffectiveWorkerCommand)
        {
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        // setsid makes the worker lead a new process group (and session) of its own; it execs in place, so the pid is
        // the worker's.
        if (_setsid is not null)
            startInfo.ArgumentList.Add(_options.EffectiveWorkerCommand);
        foreach (var argument in _options.WorkerArguments)
            startInfo.ArgumentList.Add(argument);
        if (_credentials is { } user)
            startInfo.UserName = user.Name;
        startInfo.Environment.Clear();
        foreach (var (name, value) in _environment)
            startInfo.Environment[name] = value;
        var process = new Process { StartInfo = startInfo, EnableRaisingEvents = true };
        try
        {
            process.Start();
        }
        catch
        {
            process.Dispose();
            throw;
        }
        return SpawnedWorker.Of(process);
    }

    async Task<WorkerProcess> SpawnAsync()
    {
        var spawned = await _spawner.StartAsync(_startWorker).ConfigureAwait(false);
        UpdatePeak(Interlocked.Increment(ref _alive));
        var worker = new WorkerProcess(spawned, ownGroup: _ownGroups, _options.MaxMessageBytes, _options.KillGrace, _logger,
            delta => Interlocked.Add(ref _parked, delta));
        _ = worker.Exited.ContinueWith(_ =>
        {
            Interlocked.Decrement(ref _alive);
            RunnerMetrics.WorkerExited(worker.ExitCode);
        }, TaskScheduler.Default);
        return worker;
    }

    /// <summary>Tops the warm pool up to <see cref="RunnerOptions.WarmWorkers"/> idle workers, in the background.</summary>
    void Replenish()
    {
        while (!_stopping && _warm.Count + Volatile.Read(ref _warming) < _options.WarmWorkers && !NoRoom())
        {
            Interlocked.Increment(ref _warming);
            _ = Task.Run(async () =>
            {
                try
                {
                    var worker = await SpawnAsync().ConfigureAwait(false);
                    if (_stopping)
                        Discard(worker);
                    else
                        _warm.Enqueue(worker);
                }
                catch (Exception ex) when (ex is System.ComponentModel.Win32Exception or IOException or InvalidOperationException)
                {
                    WorkerLog.WarmSpawnFailed(_logger, ex);
                }
                finally
                {
                    Interlocked.Decrement(ref _warming);
                }
            });
        }
    }

    /// <summary>
    /// Takes back a worker whose session ended: in reuse mode an idle one goes to the pool for the next invocation (at
    /// most one per slot); every other one is ended and its descriptors closed once it is gone.
    /// </summary>
    public void Return(WorkerProcess worker, bool idle)
    {
        worker.Current = null;
        if (idle && !_stopping && !worker.Exited.IsCompleted && _reusable.Count < _options.EffectiveSlots)
        {
            _reusable.Push(worker);
            if (_stopping)
                worker.Kill(); // the stop may have emptied the pool just before this push
            return;
        }
        if (idle)
            Discard(worker);
        else
            _ = worker.ReleaseAsync();
    }

    /// <summary>Ends an idle pooled worker that will not run anything more: end of stdin, then a kill if it lingers.</summary>
    static void Discard(WorkerProcess worker)
    {
        worker.Current = null;
        worker.CloseStdin();
        _ = worker.Exited.WaitAsync(TimeSpan.FromSeconds(5)).ContinueWith(t =>
        {
            if (t.IsFaulted)
                worker.Kill();
            return worker.ReleaseAsync();
        }, TaskScheduler.Default).Unwrap();
    }

    /// <summary>Kills the idle workers (warm and reusable) at stop; returns them so the caller can wait for their exit.</summary>
    public IReadOnlyList<WorkerProcess> Stop()
    {
        _stopping = true;
        var idle = new List<WorkerProcess>();
        while (_warm.TryDequeue(out var fresh))
            idle.Add(fresh);
        while (_reusable.TryPop(out var used))
            idle.Add(used);
        foreach (var worker in idle)
            worker.Kill();
        return idle;
    }

    void UpdatePeak(int alive)
    {
        int peak;
        while (alive > (peak = Volatile.Read(ref _peakAlive)) && Interlocked.CompareExchange(ref _peakAlive, alive, peak) != peak)
        {
        }
    }

    public void Dispose() => _spawner.Dispose();
}
