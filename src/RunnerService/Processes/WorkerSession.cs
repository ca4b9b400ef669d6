using System.Diagnostics;
using Microsoft.Extensions.Logging;
using RunnerService.Contracts;
using RunnerService.Contracts.Protocol;

namespace RunnerService.Processes;

/// <summary>
/// One invocation attempt on one worker process, across its pauses: its run-time budget, its waits, and the single
/// outcome it ends with. Not thread-safe: one driver at a time (the consume, then each resume).
/// </summary>
/// <remarks>
/// Whatever stops a worker early (its timeout, a stdin it does not read, the service taking it away) only signals the
/// process and records why; the read of stdout then ends when the worker is gone, and <see cref="RunAsync"/> turns
/// the recorded reason into the outcome. So every path out of a run goes through the same read loop.
/// </remarks>
sealed class WorkerSession
{
    static readonly TimeSpan ExitGrace = TimeSpan.FromSeconds(5);

    /// <summary>Longest budget a timer can hold (about 24.8 days); longer timeouts are refused at arrival.</summary>
    static readonly TimeSpan MaxTimer = TimeSpan.FromMilliseconds(int.MaxValue);

    readonly WorkerProcess _process;
    readonly WorkerTimings _timings;
    readonly ILogger _logger;
    readonly Stopwatch _runClock = new();
    TimeSpan _budget;
    int _end; // 0 live, 1 its final outcome is claimed, 2 aborted by the service
    volatile SessionOutcome.Final? _stoppedBecause;

    public WorkerSession(WorkerProcess process, RunInvocation invocation, int attempt, TimeSpan timeout, bool offerReuse, WorkerTimings timings, ILogger logger)
    {
        _process = process;
        Invocation = invocation;
        Attempt = attempt;
        _budget = timeout;
        _timings = timings;
        _logger = logger;
        StartedAt = DateTimeOffset.UtcNow;
        ReuseOffered = offerReuse;
        process.Runs++;
        process.Current = this;
    }

    /// <summary>The worker's exit status once <see cref="Exited"/> completed (128+N for death by signal N).</summary>
    public int ExitCode => _process.ExitCode;

    public WorkerProcess Process => _process;

    /// <summary>The invocation line tells the worker it may stay for another invocation after this one.</summary>
    public bool ReuseOffered { get; }

    /// <summary>The session ended with the worker alive and idle, ready for the next invocation (reuse mode).</summary>
    public bool WorkerIdleAfterFinal { get; private set; }

    public RunInvocation Invocation { get; }
    public Guid InvocationId => Invocation.InvocationId;
    public int Attempt { get; }

    /// <summary>
    /// This attempt may have run before (a redelivery, or a child of such a run): the sub-invocations it starts are
    /// checked with the saga before they run (<see cref="RunnerService.Contracts.RunInvocation.ParentRerun"/>).
    /// </summary>
    public bool Rerun { get; set; }

    /// <summary>Admitted by a saga claim (<see cref="RunnerService.Invocations.OwnershipClaims.Needed"/>): its completion is checked against the saga before it goes out.</summary>
    public bool Claimed { get; set; }
    public int Pid => _process.Pid;
    public DateTimeOffset StartedAt { get; }
    public WorkerState State { get; private set; } = WorkerState.Running;
    public Task Exited => _process.Exited;

    /// <summary>How long the invocation queued before this worker started.</summary>
    public TimeSpan QueuedFor { get; set; }

    /// <summary>True once the service took the worker away (shutdown); its outcome is then ignored.</summary>
    public bool IsAborted => Volatile.Read(ref _end) == 2;

    /// <summary>Completed by whoever aborted the session once the invocation has been rerouted.</summary>
    public TaskCompletionSource Rerouted { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>
    /// Records this attempt in the saga once, however many reasons (a long run, a wait, a lost delivery) ask for it;
    /// every caller awaits the same publish. A publish that gave up is tried afresh by the next caller.
    /// </summary>
    public Task TrackOnceAsync(Func<WorkerSession, Task> track)
    {
        lock (_trackLock)
        {
            if (_tracking is null || _tracking.IsFaulted || _tracking.IsCanceled)
                _tracking = track(this);
            return _tracking;
        }
    }

    readonly Lock _trackLock = new();
    Task? _tracking;

    /// <summary>True once the session's outcome is claimed (it ended) or the service took it away.</summary>
    public bool Ended => Volatile.Read(ref _end) != 0;

    /// <summary>Claims the final outcome for the driver; false if the service aborted the session first.</summary>
    public bool TryClaimFinal() => Interlocked.CompareExchange(ref _end, 1, 0) != 2;

    /// <summary>
    /// Takes the worker away unless its final outcome was already claimed: SIGTERM to its group, SIGKILL after the
    /// kill grace. The caller awaits <see cref="Exited"/>, reroutes the invocation and then completes
    /// <see cref="Rerouted"/>.
    /// </summary>
    public bool TryAbort() => TryAbort(_timings.KillGrace);

    /// <summary>As <see cref="TryAbort()"/>, with its own grace between SIGTERM and SIGKILL (zero: SIGKILL at once).</summary>
    public bool TryAbort(TimeSpan grace)
    {
        if (Interlocked.CompareExchange(ref _end, 2, 0) != 0)
            return false;
        _ = _process.TerminateAsync(grace);
        return true;
    }

    /// <summary>Time the worker spent running (paused time does not count against its timeout).</summary>
    public TimeSpan RunTime => _runClock.Elapsed;

    public IReadOnlyList<Guid> WaitingFor { get; private set; } = [];

    /// <summary>How many waits this worker has begun; the current one's number.</summary>
    public int WaitSequence { get; private set; }

    int _resumeClaimed;

    /// <summary>
    /// Claims the resume of wait number <paramref name="waitSequence"/> (0: the current wait) for one driver: a resume
    /// is applied at most once per wait, however many copies of it arrive. False for a duplicate, a stale wait number
    /// or a worker that is not paused.
    /// </summary>
    public bool TryClaimResume(int waitSequence)
    {
        var wait = waitSequence == 0 ? WaitSequence : waitSequence;
        return State == WorkerState.Paused && wait == WaitSequence && Interlocked.CompareExchange(ref _resumeClaimed, wait, wait - 1) == wait - 1;
    }

    /// <summary>Gives a resume claim back (its delivery was lost before the worker was resumed): a redelivery may apply it.</summary>
    public void ReleaseResumeClaim(int waitSequence)
    {
        var wait = waitSequence == 0 ? WaitSequence : waitSequence;
        Interlocked.CompareExchange(ref _resumeClaimed, wait - 1, wait);
    }

    /// <summary>True while the current wait's resume has not been claimed by any delivery yet.</summary>
    public bool AwaitsResume => State == WorkerState.Paused && Volatile.Read(ref _resumeClaimed) < WaitSequence;

    /// <summary>When the worker was last paused.</summary>
    public DateTimeOffset? PausedAt { get; private set; }

    /// <summary>Hands the worker its invocation (or a resume) without waiting for it to read; see <see cref="Deliver"/>.</summary>
    public void Send(WorkerMessage message) => _ = Deliver(message);

    /// <summary>
    /// Writes to the worker's stdin in the background, while the driver reads its stdout (a worker may write before it
    /// reads). A worker that does not take the message within <c>Runner:StdinTimeout</c> is stopped, and the run fails
    /// as a protocol violation.
    /// </summary>
    async Task Deliver(WorkerMessage message)
    {
        if (await _process.Conversation.SendAsync(message, _timings.StdinTimeout).ConfigureAwait(false) != SendResult.Stalled)
            return;
        Stop(SessionOutcome.Failed(InvocationErrorTypes.ProtocolViolation,
            $"the worker did not read its stdin: the '{WorkerProtocol.TypeName(message)}' line could not be written within {_timings.StdinTimeout} (Runner:StdinTimeout); it was killed"),
            TimeSpan.Zero);
    }

    /// <summary>Ends the run early for <paramref name="reason"/>: signals the worker; the read loop reports the reason.</summary>
    void Stop(SessionOutcome.Final reason, TimeSpan grace)
    {
        if (_stoppedBecause is not null)
            return;
        _stoppedBecause = reason;
        _ = _process.TerminateAsync(grace);
    }

    /// <summary>
    /// Lets the worker run until it ends or asks to wait. Only its timeout, a stdin it does not read, or the shutdown
    /// coordinator (<see cref="TryAbort"/>) takes it away early: the worker's life does not follow the delivery's.
    /// </summary>
    public async Task<SessionOutcome> RunAsync(ISessionCallbacks callbacks)
    {
        State = WorkerState.Running;
        if (CancelMessage is not null)
            StopForCancel(); // cancelled while paused, and resumed before the cancel could kill it
        _runClock.Start();
        var budget = _budget <= TimeSpan.Zero ? TimeSpan.FromMilliseconds(1) : _budget < MaxTimer ? _budget : MaxTimer;
        using var timeout = new CancellationTokenSource(budget);
        using var onTimeout = timeout.Token.Register(() => Stop(new SessionOutcome.Final(InvocationStatus.TimedOut, null, new InvocationError
        {
            Type = InvocationErrorTypes.TimedOut,
            Message = $"the invocation ran longer than its timeout of {Invocation.Timeout ?? _budget + RunTime}; it got SIGTERM, and SIGKILL after {_timings.KillGrace} (Runner:KillGrace)",
        }), _timings.KillGrace));
        try
        {
            var outcome = await ReadUntilOutcomeAsync(callbacks).ConfigureAwait(false);
            // A worker the service took away (shutdown) is rerouted by whoever took it: its own outcome does not count.
            return outcome switch
            {
                SessionOutcome.Waiting when IsAborted => new SessionOutcome.Aborted(),
                SessionOutcome.Final when !TryClaimFinal() => new SessionOutcome.Aborted(),
                _ => outcome,
            };
        }
        finally
        {
            _runClock.Stop();
            _budget -= _runClock.Elapsed;
        }
    }

    async Task<SessionOutcome> ReadUntilOutcomeAsync(ISessionCallbacks callbacks)
    {
        while (true)
        {
            var next = await _process.Conversation.ReadAsync(_process.OutputDeadline).ConfigureAwait(false);
            if (next is WorkerEvent.Closed closed)
                return await EndedAsync(closed).ConfigureAwait(false);
            if (_stoppedBecause is not null || IsAborted)
                continue; // stopping: whatever it still says changes nothing, read on to the end
            switch (next)
            {
                case WorkerEvent.Violation violation:
                    _process.Kill();
                    await Exited.ConfigureAwait(false);
                    return SessionOutcome.Failed(violation.ErrorType, violation.Message, violation.Details);
                case WorkerEvent.Received { Message: HelloMessage hello }:
                    _process.Reusable = hello.Reusable;
                    break;
                case WorkerEvent.Received { Message: LogMessage log }:
                    _logger.LogInformation("worker {Pid}: {Message}", Pid, log.Message);
                    break;
                case WorkerEvent.Received { Message: InvokeMessage invoke }:
                    await callbacks.OnInvokeAsync(this, invoke with { InvocationId = ChildIdFor(invoke) }).ConfigureAwait(false);
                    break;
                case WorkerEvent.Received { Message: WaitMessage { InvocationIds.Count: 0 } }:
                    Send(new ResumeMessage { Results = [] }); // nothing to wait for: answered at once, no pause
                    break;
                case WorkerEvent.Received { Message: WaitMessage wait }:
                    WaitingFor = [.. wait.InvocationIds.Select(id => _childIds.TryGetValue(id, out var child) ? child : id)];
                    WaitSequence++;
                    return new SessionOutcome.Waiting(WaitingFor);
                case WorkerEvent.Received { Message: ResultMessage result }:
                    // The driver publishes the outcome while the worker exits (AwaitExitAfterFinalAsync).
                    return new SessionOutcome.Final(InvocationStatus.Succeeded, result.Result, null);
                case WorkerEvent.Received { Message: ErrorMessage failure }:
                    return new SessionOutcome.Final(InvocationStatus.Failed, null, failure.Error, failure.Retryable);
                case WorkerEvent.Received { Message: ProgressMessage progress }:
                    callbacks.OnProgress(this, progress);
                    break;
                default:
                    break;
            }
        }
    }

    readonly Dictionary<Guid, Guid> _childIds = [];
    readonly Dictionary<Guid, Guid> _taskIds = [];
    int _children;

    /// <summary>
    /// The id the child gets (see <see cref="ChildIds"/>); the task's own id for it stays a local name, translated in
    /// its waits and in the outcomes it is resumed with.
    /// </summary>
    Guid ChildIdFor(InvokeMessage invoke)
    {
        var child = ChildIds.Derive(InvocationId, ++_children, invoke.TaskName, invoke.Arguments);
        _childIds[invoke.InvocationId] = child;
        _taskIds[child] = invoke.InvocationId;
        return child;
    }

    /// <summary>The outcomes under the ids the task itself used for its children.</summary>
    IReadOnlyList<DependencyOutcome> InTaskIds(IReadOnlyList<DependencyOutcome> results) =>
        [.. results.Select(r => _taskIds.TryGetValue(r.InvocationId, out var own) ? r with { InvocationId = own } : r)];

    /// <summary>stdout has ended: the worker is gone or going. Says why, once it has exited.</summary>
    async Task<SessionOutcome> EndedAsync(WorkerEvent.Closed closed)
    {
        var what = closed.PartialLine is null
            ? "closed its stdout without a result"
            : $"closed its stdout in the middle of a line starting '{closed.PartialLine}'";
        var killed = await ExitOrKillAsync().ConfigureAwait(false);
        State = WorkerState.Exited;
        if (_stoppedBecause is { } reason)
            return reason;
        if (killed)
            return SessionOutcome.Failed(InvocationErrorTypes.ProtocolViolation, $"the worker {what} and did not exit; it was killed");
        var code = ExitCode;
        // .NET reports death by signal N as exit code 128+N, as shells do.
        if (code > 128 && code <= 128 + 64)
        {
            var signal = code - 128;
            var cause = signal == Signals.SIGKILL ? ", sent by another process or by the kernel's out-of-memory killer" : "";
            return SessionOutcome.Failed(InvocationErrorTypes.WorkerKilled,
                $"the worker was killed by {Signals.Name(signal)} (signal {signal}{cause}; exit status {code}) and {what}");
        }
        return SessionOutcome.Failed(InvocationErrorTypes.WorkerExited, $"the worker exited with exit code {code} and {what}");
    }

    /// <summary>Pauses the worker and its group (SIGSTOP). It keeps its memory but no slot, no CPU and no descriptor here.</summary>
    public void Pause()
    {
        _process.Pause();
        State = WorkerState.Paused;
        PausedAt = DateTimeOffset.UtcNow;
    }

    /// <summary>
    /// Lets the worker run again (SIGCONT) and hands it the awaited outcomes. The resume can be megabytes: it is
    /// written after SIGCONT and in the background (<see cref="Deliver"/>), never into the pipe of a stopped process.
    /// False when the worker cannot be resumed (it no longer holds its pipes).
    /// </summary>
    public bool Resume(ResumeMessage results)
    {
        var continued = _process.Continue();
        State = WorkerState.Running;
        WaitingFor = [];
        if (continued)
            Send(results with { Results = InTaskIds(results.Results) });
        else
            Stop(SessionOutcome.Failed(InvocationErrorTypes.RunnerError,
                "the runner could not reopen the paused worker's pipes through /proc (it no longer holds its stdin or stdout, or access was refused); it was killed"),
                TimeSpan.Zero);
        return continued;
    }

    public void Kill() => _process.Kill();

    /// <summary>The throttle of this invocation's progress events (the runner's, not the worker's).</summary>
    public ProgressThrottle Progress { get; } = new();

    /// <summary>Set once the invocation is cancelled: the completion's error message.</summary>
    public string? CancelMessage { get; private set; }

    /// <summary>
    /// Cancels the invocation. A running worker gets SIGTERM to its group, SIGKILL after the kill grace, and the driver
    /// completes the invocation as Cancelled with <paramref name="message"/>. A paused one is only marked: the caller
    /// kills it, or the driver of a resume already under way stops it as it starts. Nothing happens once the session's
    /// outcome is claimed (it ended) or its process runs another session (reuse mode).
    /// </summary>
    public void Cancel(string message)
    {
        if (Volatile.Read(ref _end) != 0 || !ReferenceEquals(_process.Current, this))
            return;
        CancelMessage ??= message;
        if (State != WorkerState.Paused)
            StopForCancel();
    }

    void StopForCancel() =>
        Stop(new SessionOutcome.Final(InvocationStatus.Cancelled, null, new InvocationError { Type = InvocationErrorTypes.Cancelled, Message = CancelMessage ?? "cancelled" }),
            _timings.KillGrace);

    /// <summary>Cancels a paused worker nobody drives: killed at once (it is stopped), the caller completes it.</summary>
    public async Task CancelPausedAsync(string message)
    {
        CancelMessage ??= message;
        await _process.TerminateAsync(TimeSpan.Zero).ConfigureAwait(false);
        State = WorkerState.Exited;
    }

    readonly Lock _childrenLock = new();
    readonly List<Guid> _started = [];

    /// <summary>The sub-invocations this worker started (their ids as published), for a cancel to pass down.</summary>
    public IReadOnlyList<Guid> Children
    {
        get
        {
            lock (_childrenLock)
                return [.. _started];
        }
    }

    public void NoteChild(Guid invocationId)
    {
        lock (_childrenLock)
            _started.Add(invocationId);
    }

    /// <summary>
    /// After a final message the worker should exit on its own; one that lingers is killed. In reuse mode a worker
    /// that was offered another invocation stays: the session ends with it idle. The driver calls this after a
    /// <see cref="SessionOutcome.Final"/> and keeps the slot until it returns; other outcomes already waited.
    /// </summary>
    public async Task AwaitExitAfterFinalAsync()
    {
        if (ReuseOffered && _process.Reusable && !Exited.IsCompleted && _stoppedBecause is null)
            WorkerIdleAfterFinal = true;
        else
            await ExitOrKillAsync().ConfigureAwait(false);
        State = WorkerState.Exited;
    }

    /// <summary>Waits up to <see cref="ExitGrace"/> for the worker to exit, then kills it; true when it had to be killed.</summary>
    async Task<bool> ExitOrKillAsync()
    {
        // Usually it has exited already, or does within a millisecond: no timer then is left to fire seconds later.
        if (Exited.IsCompleted)
            return false;
        try
        {
            await Exited.WaitAsync(ExitGrace).ConfigureAwait(false);
            return false;
        }
        catch (TimeoutException)
        {
        }
        _process.Kill();
        await Exited.ConfigureAwait(false);
        return true;
    }
}

/// <summary>The time limits a session applies to its worker.</summary>
/// <param name="KillGrace">Between SIGTERM and SIGKILL when a worker is stopped early.</param>
/// <param name="StdinTimeout">Longest wait for a worker to take a line on its stdin.</param>
sealed record WorkerTimings(TimeSpan KillGrace, TimeSpan StdinTimeout);
