using System.Diagnostics;
using System.Text;
using Microsoft.Extensions.Logging;
using RunnerService.Contracts;
using RunnerService.Contracts.Protocol;

namespace RunnerService.Processes;

/// <summary>
/// One worker process and the protocol pipe to it, for the whole life of one invocation attempt
/// (across pauses). Not thread-safe: one driver at a time (the consume, then each resume).
/// </summary>
sealed class WorkerSession
{
    static readonly TimeSpan ExitGrace = TimeSpan.FromSeconds(5);
    readonly WorkerPipes _pipes;
    readonly ILogger _logger;
    readonly Stopwatch _runClock = new();
    TimeSpan _budget;
    int _end; // 0 live, 1 its final outcome is claimed, 2 aborted by the service

    public WorkerSession(WorkerPipes pipes, RunInvocation invocation, int attempt, TimeSpan timeout, bool offerReuse, ILogger logger)
    {
        _pipes = pipes;
        Invocation = invocation;
        Attempt = attempt;
        _budget = timeout;
        _logger = logger;
        StartedAt = DateTimeOffset.UtcNow;
        ReuseOffered = offerReuse;
        pipes.Runs++;
        pipes.Current = this;
    }

    /// <summary>The worker's exit status once <see cref="Exited"/> completed (128+N for death by signal N).</summary>
    public int ExitCode => _pipes.ExitCode;

    public WorkerPipes Pipes => _pipes;

    /// <summary>The invocation line tells the worker it may stay for another invocation after this one.</summary>
    public bool ReuseOffered { get; }

    /// <summary>The session ended with the worker alive and idle, ready for the next invocation (reuse mode).</summary>
    public bool WorkerIdleAfterFinal { get; private set; }

    public RunInvocation Invocation { get; }
    public Guid InvocationId => Invocation.InvocationId;
    public int Attempt { get; }
    public int Pid => _pipes.Pid;
    public DateTimeOffset StartedAt { get; }
    public WorkerState State { get; private set; } = WorkerState.Running;
    public Task Exited => _pipes.Exited;

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

    /// <summary>Claims the final outcome for the driver; false if the service aborted the session first.</summary>
    public bool TryClaimFinal() => Interlocked.CompareExchange(ref _end, 1, 0) != 2;

    /// <summary>
    /// Takes the worker away unless its final outcome was already claimed: kills it. The caller must reroute the
    /// invocation and then complete <see cref="Rerouted"/>.
    /// </summary>
    public bool TryAbort()
    {
        if (Interlocked.CompareExchange(ref _end, 2, 0) != 0)
            return false;
        Kill();
        return true;
    }

    /// <summary>Time the worker spent running (paused time does not count against its timeout).</summary>
    public TimeSpan RunTime => _runClock.Elapsed;

    public IReadOnlyList<Guid> WaitingFor { get; private set; } = [];

    /// <summary>How many waits this worker has begun; the current one's number.</summary>
    public int WaitSequence { get; private set; }

    /// <summary>When the worker was last paused.</summary>
    public DateTimeOffset? PausedAt { get; private set; }

    public bool TrySend(WorkerMessage message)
    {
        try
        {
            WorkerProtocol.Write(_pipes.Stdin, message);
            _pipes.Stdin.Flush();
            return true;
        }
        catch (IOException)
        {
            return false; // the worker is gone; its exit is reported by the read loop
        }
        catch (ObjectDisposedException)
        {
            return false;
        }
    }

    /// <summary>
    /// Lets the worker run until it ends or asks to wait. Only its timeout or the shutdown coordinator
    /// (<see cref="TryAbort"/>) takes it away early: the worker's life does not follow the delivery's.
    /// </summary>
    public async Task<SessionOutcome> RunAsync(ISessionCallbacks callbacks)
    {
        State = WorkerState.Running;
        _runClock.Start();
        using var timeout = new CancellationTokenSource(_budget > TimeSpan.Zero ? _budget : TimeSpan.FromMilliseconds(1));
        // Kill instead of cancelling the read: the read then ends with end-of-stream, whatever the pipe supports.
        using var onTimeout = timeout.Token.Register(Kill);
        try
        {
            var outcome = await ReadUntilOutcomeAsync(callbacks).ConfigureAwait(false);
            if (outcome is SessionOutcome.Waiting && IsAborted)
                return new SessionOutcome.Aborted();
            if (outcome is SessionOutcome.Final && !TryClaimFinal())
                return new SessionOutcome.Aborted(); // killed by the service, not by its own fault
            if (timeout.IsCancellationRequested && outcome is not SessionOutcome.Waiting)
            {
                await Exited.ConfigureAwait(false);
                return new SessionOutcome.Final(InvocationStatus.TimedOut, null, new InvocationError
                {
                    Type = InvocationErrorTypes.TimedOut,
                    Message = $"the invocation ran longer than its timeout of {Invocation.Timeout ?? _budget + RunTime} and was killed",
                });
            }
            return outcome;
        }
        finally
        {
            _runClock.Stop();
            _budget = _budget - _runClock.Elapsed;
        }
    }

    async Task<SessionOutcome> ReadUntilOutcomeAsync(ISessionCallbacks callbacks)
    {
        while (true)
        {
            var read = await _pipes.Stdout.ReadLineAsync(CancellationToken.None).ConfigureAwait(false);
            switch (read.Kind)
            {
                case LineReadKind.EndOfStream:
                    return await DescribeExitAsync("closed its stdout without a result").ConfigureAwait(false);
                case LineReadKind.PartialLineAtEnd:
                    return await DescribeExitAsync($"closed its stdout in the middle of a line starting '{Preview(read.Bytes.Span)}'").ConfigureAwait(false);
                case LineReadKind.TooLong:
                    Kill();
                    await Exited.ConfigureAwait(false);
                    var head = Preview(read.Bytes.Span);
                    return head.Contains("\"type\":\"result\"", StringComparison.Ordinal)
                        ? SessionOutcome.Failed(InvocationErrorTypes.ResultTooLarge,
                            $"the result is larger than the limit of {_pipes.Stdout.MaxLineBytes} bytes (Runner:MaxMessageBytes)")
                        : SessionOutcome.Failed(InvocationErrorTypes.ProtocolViolation,
                            $"the worker wrote a line longer than the limit of {_pipes.Stdout.MaxLineBytes} bytes, starting '{head}'");
            }

            if (read.Bytes.Length == 0)
                continue;
            if (!WorkerProtocol.TryDecode(read.Bytes.Span, out var message, out var error))
            {
                var line = Preview(read.Bytes.Span);
                Kill();
                await Exited.ConfigureAwait(false);
                return SessionOutcome.Failed(InvocationErrorTypes.ProtocolViolation,
                    $"the worker wrote a line that is not a protocol message: '{line}'", error);
            }

            switch (message)
            {
                case HelloMessage hello when hello.Protocol != WorkerProtocol.Version:
                    Kill();
                    await Exited.ConfigureAwait(false);
                    return SessionOutcome.Failed(InvocationErrorTypes.ProtocolViolation,
                        $"the worker speaks protocol version {hello.Protocol}; this runner speaks {WorkerProtocol.Version}");
                case HelloMessage hello:
                    _pipes.Reusable = hello.Reusable;
                    break;
                case LogMessage log:
                    _logger.LogInformation("worker {Pid}: {Message}", Pid, log.Message);
                    break;
                case ProgressMessage:
                    break;
                case InvokeMessage invoke:
                    await callbacks.OnInvokeAsync(this, invoke).ConfigureAwait(false);
                    break;
                case WaitMessage { InvocationIds: null }:
                    Kill();
                    await Exited.ConfigureAwait(false);
                    return SessionOutcome.Failed(InvocationErrorTypes.ProtocolViolation,
                        $"the worker sent a 'wait' without 'invocationIds': '{Preview(read.Bytes.Span)}'");
                case WaitMessage { InvocationIds.Count: 0 }:
                    // Nothing to wait for: answer at once, no pause.
                    TrySend(new ResumeMessage { Results = [] });
                    break;
                case WaitMessage wait:
                    WaitingFor = wait.InvocationIds;
                    WaitSequence++;
                    return new SessionOutcome.Waiting(wait.InvocationIds);
                case ResultMessage result:
                    if (!TryClaimFinal())
                        return new SessionOutcome.Aborted();
                    // The driver publishes the outcome while the worker exits (AwaitExitAfterFinalAsync).
                    return new SessionOutcome.Final(InvocationStatus.Succeeded, result.Result, null);
                case ErrorMessage { Error: null }:
                    Kill();
                    await Exited.ConfigureAwait(false);
                    return SessionOutcome.Failed(InvocationErrorTypes.ProtocolViolation,
                        $"the worker sent an 'error' without an 'error' object: '{Preview(read.Bytes.Span)}'");
                case ErrorMessage failure:
                    if (!TryClaimFinal())
                        return new SessionOutcome.Aborted();
                    return new SessionOutcome.Final(InvocationStatus.Failed, null, failure.Error, failure.Retryable);
                default:
                    Kill();
                    await Exited.ConfigureAwait(false);
                    return SessionOutcome.Failed(InvocationErrorTypes.ProtocolViolation,
                        $"the worker sent '{Preview(read.Bytes.Span)}', a message only the runner may send");
            }
        }
    }

    /// <summary>Pauses the worker (SIGSTOP). It keeps its memory but no slot and no CPU.</summary>
    public void Pause()
    {
        Signals.Send(Pid, Signals.SIGSTOP);
        State = WorkerState.Paused;
        PausedAt = DateTimeOffset.UtcNow;
    }

    /// <summary>Writes the awaited outcomes to the worker and lets it run again (SIGCONT).</summary>
    public bool Resume(ResumeMessage results)
    {
        var written = TrySend(results);
        Signals.Send(Pid, Signals.SIGCONT);
        State = WorkerState.Running;
        WaitingFor = [];
        return written;
    }

    public void Kill() => _pipes.Kill();

    /// <summary>
    /// After a final message the worker should exit on its own; one that lingers is killed. In reuse mode a worker
    /// that was offered another invocation stays: the session ends with it idle. The driver calls this after a
    /// <see cref="SessionOutcome.Final"/> and keeps the slot until it returns; other outcomes already waited.
    /// </summary>
    public async Task AwaitExitAfterFinalAsync()
    {
        if (ReuseOffered && _pipes.Reusable && !Exited.IsCompleted)
            WorkerIdleAfterFinal = true;
        else
            await ExitOrKillAsync().ConfigureAwait(false);
        State = WorkerState.Exited;
    }

    /// <summary>Waits up to <see cref="ExitGrace"/> for the worker to exit, then kills it; true when it had to be killed.</summary>
    async Task<bool> ExitOrKillAsync()
    {
        if (await Task.WhenAny(Exited, Task.Delay(ExitGrace)).ConfigureAwait(false) == Exited)
            return false;
        Kill();
        await Exited.ConfigureAwait(false);
        return true;
    }

    async Task<SessionOutcome> DescribeExitAsync(string what)
    {
        var killed = await ExitOrKillAsync().ConfigureAwait(false);
        State = WorkerState.Exited;
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

    static string Preview(ReadOnlySpan<byte> bytes)
    {
        var head = bytes[..Math.Min(bytes.Length, 120)];
        var text = Encoding.UTF8.GetString(head);
        return bytes.Length > head.Length ? text + "…" : text;
    }
}
