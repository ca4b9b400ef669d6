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
/// Holds this replica's attempts in one <see cref="AttemptTable{TSession}"/> (claimed, live with their worker session,
/// recently finished), hands out workers for new invocations through the <see cref="WorkerPool"/>, and makes sure no
/// worker outlives the service: on stop it kills what is left; if the service dies, the workers' parent-death signal
/// does the same.
/// </summary>
sealed class WorkerSupervisor(IOptions<RunnerOptions> options, TimeProvider time, ILogger<WorkerSupervisor> logger) : IHostedService, IDisposable
{
    readonly AttemptTable<WorkerSession> _attempts = new(time);
    readonly RunnerOptions _options = options.Value;
    readonly WorkerPool _pool = new(options.Value, logger);

    /// <summary>Worker processes alive right now (running, paused or idle).</summary>
    public int Alive => _pool.Alive;

    /// <summary>Most worker processes alive at once since start.</summary>
    public int PeakAlive => _pool.PeakAlive;

    /// <summary>The live sessions (running or paused) right now, a copy.</summary>
    public IReadOnlyList<WorkerSession> Sessions => _attempts.Sessions;

    public bool TryGet(Guid invocationId, out WorkerSession session) => _attempts.TryGetSession(invocationId, out session);

    /// <summary>
    /// Claims <paramref name="attempt"/> of an invocation for one delivery (see <see cref="AttemptTable{TSession}.TryClaim"/>):
    /// a duplicate must not run a second time at once, nor a finished attempt again.
    /// </summary>
    public LocalClaim TryClaim(Guid invocationId, int attempt, out int heldAttempt, out WorkerSession? session) =>
        _attempts.TryClaim(invocationId, attempt, out heldAttempt, out session);

    /// <summary>Whether this replica holds the invocation (claimed, running, paused) or ran it to its end in the last minutes.</summary>
    public bool Knows(Guid invocationId) => _attempts.Knows(invocationId);

    /// <summary>Gives up the claim of <paramref name="attempt"/> whose delivery ended without leaving a live worker behind.</summary>
    public void ReleaseClaim(Guid invocationId, int attempt) => _attempts.Release(invocationId, attempt);

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
        _attempts.Started(invocation.InvocationId, attempt, session);
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
        if (!_attempts.TryGetSession(invocationId, out var session) || session.Attempt != attempt || !session.TryAbort(TimeSpan.Zero))
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

    /// <summary>
    /// Forgets a session whose worker is done with its invocation, and gives the worker back to the pool: remembered as
    /// finished here when it ran to its end, forgotten when it was taken away (its redelivery must be able to run it).
    /// </summary>
    public void Remove(WorkerSession session, bool finished = true)
    {
        if (_attempts.Ended(session.InvocationId, session.Attempt, session, finished))
            _pool.Return(session.Process, session.WorkerIdleAfterFinal);
    }

    /// <summary>
    /// True when this replica ran <paramref name="attempt"/> (or a later attempt) of the invocation to its end within the
    /// last minutes: a redelivery of that attempt (its delivery was lost with the channel) must not run it again, and
    /// its final events may still be on their way to the saga (so it is not an orphan).
    /// </summary>
    public bool FinishedHere(Guid invocationId, int attempt) => _attempts.FinishedHere(invocationId, attempt);

    public Task StartAsync(CancellationToken cancellationToken)
    {
        _pool.Start();
        return Task.CompletedTask;
    }

    /// <summary>Kills every worker still alive when the host stops, and waits until each is gone.</summary>
    public async Task StopAsync(CancellationToken cancellationToken)
    {
        var idle = _pool.Stop();
        var left = _attempts.Sessions;
        foreach (var session in left)
        {
            WorkerLog.KillingOnStop(logger, session.Pid, session.InvocationId, session.Invocation.TaskName, session.State);
            session.Kill();
        }
        await Task.WhenAll(left.Select(s => s.Exited).Concat(idle.Select(p => p.Exited))).WaitAsync(cancellationToken).ConfigureAwait(false);
    }

    public void Dispose() => _pool.Dispose();
}
