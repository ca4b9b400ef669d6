using System.IO.Pipes;
using Microsoft.Extensions.Logging;

namespace RunnerService.Processes;

/// <summary>
/// One worker process for its whole life: its process group, its signals, its three pipes and when they close.
/// Normally that life is one invocation; with <c>Runner:MaxInvocationsPerProcess</c> above 1 a worker that said it
/// can (<c>hello.reusable</c>) runs several, one after another, each in its own <see cref="WorkerSession"/>.
/// </summary>
/// <remarks>
/// The worker leads its own session and process group (<see cref="NativeSpawn"/>, or <c>setsid</c> for another user),
/// so its own children share its fate: every signal goes to the group, and when the worker exits whatever is left of
/// the group gets SIGTERM, then SIGKILL after the kill grace. Descendants that start a session or group of their own escape this (docs/faults.md).
/// </remarks>
sealed class WorkerProcess
{
    readonly SpawnedWorker _spawned;
    readonly bool _ownGroup;
    readonly TimeSpan _killGrace;
    readonly ILogger _logger;
    readonly CancellationTokenSource _outputDeadline = new();
    Stream _stdin;
    Stream _stdout;
    StderrPump? _stderr;
    readonly PipeIdentity _pipes;
    int _released;
    readonly Action<int>? _parkedChanged;
    readonly Lock _parkLock = new();
    bool? _reopenWorks;

    public WorkerProcess(SpawnedWorker spawned, bool ownGroup, int maxLineBytes, TimeSpan killGrace, ILogger logger, Action<int>? parkedChanged = null)
    {
        _parkedChanged = parkedChanged;
        _spawned = spawned;
        _ownGroup = ownGroup;
        _killGrace = killGrace;
        _logger = logger;
        Pid = spawned.Pid;
        _stdin = spawned.Stdin;
        _stdout = spawned.Stdout;
        _pipes = PipeIdentity.Of(_stdin, _stdout, spawned.Stderr);
        Conversation = new WorkerConversation(_stdin, _stdout, maxLineBytes);
        _stderr = new StderrPump(this, spawned.Stderr, maxLineBytes, logger, _outputDeadline.Token);
        Exited = WatchExitAsync();
    }

    public int Pid { get; }

    /// <summary>The protocol on stdin/stdout.</summary>
    public WorkerConversation Conversation { get; }

    /// <summary>Completes when the worker process has exited (not its group, not its pipes).</summary>
    public Task Exited { get; }

    /// <summary>The exit status once <see cref="Exited"/> completed (128+N for death by signal N).</summary>
    public int ExitCode { get; private set; }

    /// <summary>
    /// Cancelled a while after the worker exited: a read of its stdout or stderr still open then is abandoned, so a
    /// descendant that escaped the group and keeps a pipe open never holds the session.
    /// </summary>
    public CancellationToken OutputDeadline => _outputDeadline.Token;

    /// <summary>The worker said in its hello that it can run another invocation after a result.</summary>
    public bool Reusable { get; set; }

    /// <summary>Invocations handed to this process so far.</summary>
    public int Runs { get; set; }

    /// <summary>True while paused with its pipe ends closed on this side (they are reopened on resume).</summary>
    public bool Parked { get; private set; }


    /// <summary>The session that owns the process now (its stderr lines are logged under that invocation).</summary>
    public WorkerSession? Current { get; set; }

    async Task WatchExitAsync()
    {
        ExitCode = await _spawned.Exit.ConfigureAwait(false);
        SetParked(false);
        // The worker is gone; what is left of its group (helpers it started) goes with it. Reads of pipes that such a
        // process still holds are abandoned once the kill grace has had its effect.
        if (_ownGroup && Signals.SendToGroup(Pid, Signals.SIGTERM))
        {
            Signals.SendToGroup(Pid, Signals.SIGCONT);
            _ = KillGroupAfterAsync(_killGrace);
        }
        _outputDeadline.CancelAfter(_killGrace + OutputDrainGrace);
    }

    static readonly TimeSpan OutputDrainGrace = TimeSpan.FromSeconds(1);
    static readonly TimeSpan StopPatience = TimeSpan.FromSeconds(1);

    async Task KillGroupAfterAsync(TimeSpan grace)
    {
        if (grace > TimeSpan.Zero)
            await Task.Delay(grace).ConfigureAwait(false);
        Signals.SendToGroup(Pid, Signals.SIGKILL);
    }

    /// <summary>Sends a signal to the worker and its group.</summary>
    void Signal(int signal)
    {
        // A parked worker's exit is watched again first: whatever the signal does, Exited must see it.
        if (signal != Signals.SIGSTOP)
            WatchAgain(terminal: signal is Signals.SIGKILL or Signals.SIGTERM);
        if (_ownGroup)
            Signals.SendToGroup(Pid, signal);
        // The worker itself, even if it left its group (and while the group does not exist yet).
        if (!Exited.IsCompleted)
            Signals.Send(Pid, signal);
    }

    /// <summary>SIGKILL to the worker and its group, at once.</summary>
    public void Kill() => Signal(Signals.SIGKILL);

    /// <summary>
    /// SIGTERM to the worker and its group, so a task can clean up; SIGKILL after <paramref name="grace"/> (zero: at
    /// once). Completes when the worker has exited.
    /// </summary>
    public async Task TerminateAsync(TimeSpan grace)
    {
        if (Exited.IsCompleted)
            return;
        if (grace <= TimeSpan.Zero)
        {
            Kill();
        }
        else
        {
            Signal(Signals.SIGTERM);
            Signal(Signals.SIGCONT); // a stopped process keeps SIGTERM pending until it runs
            if (await Task.WhenAny(Exited, Task.Delay(grace)).ConfigureAwait(false) != Exited)
                Kill();
        }
        await Exited.ConfigureAwait(false);
    }

    /// <summary>
    /// Stops the worker and its group (SIGSTOP) and closes this side's pipe ends: a paused worker costs the service no
    /// descriptor, however many wait. The pipes themselves live on in the worker; <see cref="Continue"/> reopens them.
    /// </summary>
    public void Pause()
    {
        Signal(Signals.SIGSTOP);
        if (!_pipes.CanReopen || Exited.IsCompleted || !(_reopenWorks ??= _pipes.CanReopenFrom(Pid)))
            return;
        // Only a worker all of whose threads have stopped may lose its pipe ends: a thread still on its way into read()
        // would see the end of stdin. One not seen stopped in time keeps its pipes (it costs descriptors, nothing else).
        // The rest of the group got the signal at the same moment; one of its members still writing then gets EPIPE.
        if (!Signals.WaitUntilStopped(Pid, StopPatience))
            return;
        _stderr?.Stop();
        _stderr = null;
        _stdin.Dispose();
        _stdout.Dispose();
        SetParked(true);
        // Nor its exit watch (ChildReaper's pidfd): a paused worker holds no descriptor here at all.
        lock (_watchLock)
        {
            if (_spawned.Owner is null && !_ending)
            {
                ChildReaper.Park(Pid);
                _watchParked = true;
            }
        }
    }

    readonly Lock _watchLock = new();
    bool _watchParked;
    bool _ending;

    /// <summary>
    /// The exit of a worker started through posix_spawn is watched again after <see cref="Pause"/> parked it; after a
    /// terminal signal (<paramref name="terminal"/>) it is never parked again.
    /// </summary>
    void WatchAgain(bool terminal = false)
    {
        lock (_watchLock)
        {
            _ending |= terminal;
            if (!_watchParked)
                return;
            ChildReaper.Unpark(Pid);
            _watchParked = false;
        }
    }

    void SetParked(bool parked)
    {
        lock (_parkLock)
        {
            if (Parked == parked)
                return;
            Parked = parked;
        }
        _parkedChanged?.Invoke(parked ? 1 : -1);
    }

    /// <summary>
    /// Reopens the pipe ends closed by <see cref="Pause"/> (through /proc) and lets the worker and its group run again
    /// (SIGCONT). False, and the worker left stopped, when it no longer holds its stdin or stdout: it cannot be resumed.
    /// </summary>
    public bool Continue()
    {
        var reopened = true;
        if (Parked)
        {
            WatchAgain();
            var pipes = _pipes.Reopen(Pid);
            if (pipes.Stdin is null || pipes.Stdout is null)
            {
                pipes.Stdin?.Dispose();
                pipes.Stdout?.Dispose();
                pipes.Stderr?.Dispose();
                reopened = false;
            }
            else
            {
                _stdin = pipes.Stdin;
                _stdout = pipes.Stdout;
                Conversation.Rebind(_stdin, _stdout);
                if (pipes.Stderr is not null)
                    _stderr = new StderrPump(this, pipes.Stderr, Conversation.MaxLineBytes, _logger, _outputDeadline.Token);
                SetParked(false);
            }
        }
        // A worker whose pipes could not be reopened stays stopped: it would only read the end of its stdin.
        if (reopened)
            Signal(Signals.SIGCONT);
        return reopened;
    }

    /// <summary>Closes stdin: an idle worker takes it as the end of its work and exits.</summary>
    public void CloseStdin()
    {
        try
        {
            _stdin.Dispose();
        }
        catch (IOException)
        {
        }
    }

    /// <summary>
    /// Once the worker has exited and nobody reads its stdout any more: closes every descriptor this side holds for it
    /// (the stderr pipe when its reader is done). Idempotent.
    /// </summary>
    public async Task ReleaseAsync()
    {
        if (Interlocked.Exchange(ref _released, 1) != 0)
            return;
        await Exited.ConfigureAwait(false);
        _stdin.Dispose();
        _stdout.Dispose();
        if (_stderr is { } stderr)
            await stderr.Completion.ConfigureAwait(false);
        _spawned.Owner?.Dispose();
        _outputDeadline.Dispose();
    }

    /// <summary>Wraps a descriptor reopened through /proc as a pipe stream (asynchronous, cancellable I/O).</summary>
    internal static Stream PipeStream(int fd, PipeDirection direction) =>
        new AnonymousPipeClientStream(direction, new Microsoft.Win32.SafeHandles.SafePipeHandle(fd, ownsHandle: true));
}
