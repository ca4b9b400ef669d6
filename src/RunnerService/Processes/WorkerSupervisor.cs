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
/// Knows every live worker session (running or paused) of this replica, hands out workers for new invocations through
/// the <see cref="WorkerPool"/>, and makes sure none outlives the service: on stop it kills what is left; if the
/// service dies, the workers' parent-death signal does the same.
/// </summary>
sealed class WorkerSupervisor(IOptions<RunnerOptions> options, TimeProvider time, ILogger<WorkerSupervisor> logger) : IHostedService, IDisposable
{
    readonly ConcurrentDictionary<Guid, WorkerSession> _sessions = new();
    readonly RunnerOptions _options = options.Value;
    readonly WorkerPool _pool = new(options.Value, logger);

    /// <summary>Worker processes alive right now (running, paused or idle).</summary>
    public int Alive => _pool.Alive;

    /// <summary>Most worker processes alive at once since start.</summary>
    public int PeakAlive => _pool.PeakAlive;

    public ICollection<WorkerSession> Sessions => _sessions.Values;

    public bool TryGet(Guid invocationId, out WorkerSession session) => _sessions.TryGetValue(invocationId, out session!);

    readonly ConcurrentDictionary<Guid, int> _claims = new();

    /// <summary>
    /// Claims an invocation id for one delivery of <paramref name="attempt"/>: false while another delivery of the same
    /// id is being handled or its worker lives (running or paused) here — a duplicate must not run a second time at once.
    /// </summary>
    public bool TryClaim(Guid invocationId, int attempt) => _claims.TryAdd(invocationId, attempt);

    /// <summary>The attempt whose delivery holds the claim of this id here, if any.</summary>
    public int? ClaimedAttempt(Guid invocationId) => _claims.TryGetValue(invocationId, out var attempt) ? attempt : null;

    public bool IsClaimed(Guid invocationId) => _claims.ContainsKey(invocationId);

    /// <summary>
    /// Gives up the claim of <paramref name="attempt"/> whose delivery ended without leaving a live worker behind; a
    /// newer attempt's claim taken meanwhile stays.
    /// </summary>
    public void ReleaseClaim(Guid invocationId, int attempt)
    {
        if (!_sessions.ContainsKey(invocationId))
            _claims.TryRemove(new KeyValuePair<Guid, int>(invocationId, attempt));
    }

    /// <summary>Waits (holding no slot) until a new worker fits in the descriptor room; see <see cref="WorkerPool.WaitForRoomAsync"/>.</summary>
    public Task WaitForRoomAsync(CancellationToken cancellationToken) => _pool.WaitForRoomAsync(cancellationToken);

    /// <summary>Starts the worker for one invocation (a fresh process unless warm or reuse pools have one).</summary>
    public async Task<WorkerSession> StartAsync(RunInvocation invocation, int attempt)
    {
        using var spawn = RunnerActivitySource.StartSpawn(invocation);
        var worker = await _pool.TakeAsync().ConfigureAwait(false);
        var offerReuse = _options.MaxInvocationsPerProcess > 1 && worker.Runs + 1 < _options.MaxInvocationsPerProcess;
        var session = new WorkerSession(worker, invocation, attempt,
            invocation.Timeout is { } t && t > TimeSpan.Zero ? t : _options.DefaultTimeout, offerReuse, _pool.Timings, logger);
        _sessions[invocation.InvocationId] = session;
        return session;
    }

    /// <summary>
    /// Kills the worker of <paramref name="attempt"/> at once (SIGKILL, no grace): the saga has moved the invocation on
    /// to a newer attempt, or this replica fences itself before peers run its work again. Nothing is rerouted here,
    /// and the attempt is not remembered as finished here: its redelivery must be able to run it. False when that
    /// attempt is not here.
    /// </summary>
    public async Task<bool> AbandonAsync(Guid invocationId, int attempt)
    {
        if (!_sessions.TryGetValue(invocationId, out var session) || session.Attempt != attempt || !session.TryAbort(TimeSpan.Zero))
            return false;
        var paused = session.State == WorkerState.Paused;
        await session.Exited.ConfigureAwait(false);
        session.Rerouted.TrySetResult(); // a running one's driver waits for this, then releases its slot
        if (paused)
            Remove(session, finished: false); // no driver is waiting on a paused session
        return true;
    }

    readonly System.Collections.Concurrent.ConcurrentDictionary<Guid, (string Message, DateTimeOffset At)> _cancels = new();
    static readonly TimeSpan CancelMemory = TimeSpan.FromMinutes(10);

    /// <summary>
    /// Keeps a cancel for an invocation this replica does not hold yet (granted a claim, not started): it is applied
    /// when its run starts here (<see cref="TakeCancel"/>).
    /// </summary>
    public void RememberCancel(Guid invocationId, string message)
    {
        var now = time.GetUtcNow();
        if (_cancels.Count > 10_000)
        {
            foreach (var (id, entry) in _cancels)
            {
                if (now - entry.At > CancelMemory)
                    _cancels.TryRemove(id, out _);
            }
        }
        _cancels[invocationId] = (message, now);
    }

    /// <summary>The cancel kept for <paramref name="invocationId"/>, if any (and recent), taken once.</summary>
    public string? TakeCancel(Guid invocationId) =>
        !_cancels.IsEmpty && _cancels.TryRemove(invocationId, out var entry) && time.GetUtcNow() - entry.At <= CancelMemory ? entry.Message : null;

    /// <summary>Forgets a session whose worker has ended.</summary>
    public void Remove(WorkerSession session, bool finished = true)
    {
        if (_sessions.TryRemove(new KeyValuePair<Guid, WorkerSession>(session.InvocationId, session)))
        {
            if (finished)
                RememberFinished(session.InvocationId, session.Attempt);
            _claims.TryRemove(new KeyValuePair<Guid, int>(session.InvocationId, session.Attempt));
            _pool.Return(session.Process, session.WorkerIdleAfterFinal);
        }
    }

    static readonly TimeSpan FinishedMemory = TimeSpan.FromMinutes(5);
    const int FinishedCapacity = 200_000;
    readonly Lock _finishedLock = new();
    readonly Dictionary<Guid, (DateTimeOffset At, int Attempt)> _finished = [];
    readonly Queue<(Guid Id, DateTimeOffset At)> _finishedOrder = new();

    /// <summary>
    /// Remembers a finished attempt for <see cref="FinishedMemory"/> (at most <see cref="FinishedCapacity"/> of them,
    /// about 10 MB); entries are forgotten oldest first, so each call costs O(1) however many are remembered.
    /// </summary>
    void RememberFinished(Guid invocationId, int attempt)
    {
        var now = time.GetUtcNow();
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
            return _finished.TryGetValue(invocationId, out var finished) && finished.Attempt >= attempt && time.GetUtcNow() - finished.At < FinishedMemory;
    }

    public Task StartAsync(CancellationToken cancellationToken)
    {
        _pool.Start();
        return Task.CompletedTask;
    }

    /// <summary>Kills every worker still alive when the host stops, and waits until each is gone.</summary>
    public async Task StopAsync(CancellationToken cancellationToken)
    {
        var idle = _pool.Stop();
        var left = _sessions.Values.ToArray();
        foreach (var session in left)
        {
            WorkerLog.KillingOnStop(logger, session.Pid, session.InvocationId, session.Invocation.TaskName, session.State);
            session.Kill();
        }
        await Task.WhenAll(left.Select(s => s.Exited).Concat(idle.Select(p => p.Exited))).WaitAsync(cancellationToken).ConfigureAwait(false);
    }

    public void Dispose() => _pool.Dispose();
}
