using System.Diagnostics;
using MassTransit;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using RunnerService.Contracts;
using RunnerService.Contracts.Protocol;
using RunnerService.Hosting;
using RunnerService.Processes;
using RunnerService.Saga.Persistence;
using RunnerService.Slots;
using RunnerService.Telemetry;

namespace RunnerService.Invocations;

/// <summary>
/// Drives worker sessions: starts them, relays what the worker asks for, and publishes the invocation's events.
/// Used by the consumer of new invocations and by the resume consumer.
/// </summary>
sealed class InvocationExecutor(WorkerSupervisor supervisor, IBus bus, ReplySender replies, Saga.Persistence.ISagaStore sagas, Recovery.BrokerContact contact,
    IOptions<RunnerOptions> options, TimeProvider time, ILogger<InvocationExecutor> logger)
{
    readonly RunnerOptions _options = options.Value;

    readonly System.Collections.Concurrent.ConcurrentDictionary<Task, byte> _background = new();

    /// <summary>
    /// Keeps track of work that goes on with nobody awaiting it: the long-run tracking timers, and runs whose delivery
    /// was handed off or lost. Each is observed (a fault is logged, never lost) and awaited at stop.
    /// </summary>
    public void Observe(Task work)
    {
        if (work.IsCompleted)
        {
            _ = work.Exception; // observed
            return;
        }
        _background.TryAdd(work, 0);
        _ = work.ContinueWith(done =>
        {
            _background.TryRemove(done, out _);
            if (done.Exception is { } fault)
                InvocationLog.BackgroundFailed(logger, fault.GetBaseException());
        }, TaskScheduler.Default);
    }

    /// <summary>Waits (up to <paramref name="limit"/>) for the work <see cref="Observe"/> knows of; true when all of it ended.</summary>
    public async Task<bool> DrainBackgroundAsync(TimeSpan limit)
    {
        try
        {
            await Task.WhenAll(_background.Keys).WaitAsync(limit, time).ConfigureAwait(false);
            return true;
        }
        catch (TimeoutException)
        {
            return false;
        }
        catch (Exception)
        {
            return true; // faults were logged by Observe
        }
    }

    /// <summary>This replica's own queue, where the saga sends resumes of the workers it holds.</summary>
    public Uri InstanceAddress { get; } = options.Value.InstanceAddress;

    /// <summary>Starts a fresh worker for <paramref name="invocation"/> and drives it until it ends or waits.</summary>
    /// <param name="lease">The slot it holds; it goes back once the worker has exited or paused (<see cref="InSlotAsync"/>).</param>
    public async Task RunNewAsync(ConsumeContext context, RunInvocation invocation, int attempt, DateTime queuedSince, SlotLease lease)
    {
        using var runActivity = RunnerActivitySource.StartRun(context, invocation, attempt);
        await InSlotAsync(lease, () => StartAndRunAsync(context, invocation, attempt, queuedSince)).ConfigureAwait(false);
    }

    /// <summary>Writes the awaited outcomes to a paused worker, lets it run (SIGCONT) and drives it on.</summary>
    /// <param name="lease">The slot it holds; it goes back once the worker has exited or paused again (<see cref="InSlotAsync"/>).</param>
    public async Task ResumeAsync(ConsumeContext context, WorkerSession session, IReadOnlyList<DependencyOutcome> results, SlotLease lease)
    {
        var pausedFor = session.PausedAt is { } pausedAt ? DateTimeOffset.UtcNow - pausedAt : TimeSpan.Zero;
        using var runActivity = RunnerActivitySource.StartResume(context, session.Invocation, session.Attempt, pausedFor);
        await InSlotAsync(lease, () => ResumeAndRunAsync(context, session, results, pausedFor)).ConfigureAwait(false);
    }

    /// <summary>
    /// The one place a slot goes back. <paramref name="inSlot"/> runs with the slot held, until the worker has exited,
    /// paused or been taken away, and returns what is left to do: publishing the outcome, which needs the broker, not
    /// a slot. So there are never more live running workers than slots, and a slow broker never holds a slot.
    /// </summary>
    static async Task InSlotAsync(SlotLease lease, Func<Task<Func<Task>>> inSlot)
    {
        Func<Task> afterSlot;
        using (lease)
            afterSlot = await inSlot().ConfigureAwait(false);
        await afterSlot().ConfigureAwait(false);
    }

    static readonly Func<Task> NothingLeft = () => Task.CompletedTask;

    async Task<Func<Task>> StartAndRunAsync(ConsumeContext context, RunInvocation invocation, int attempt, DateTime queuedSince)
    {
        var queuedFor = DateTime.UtcNow - queuedSince;
        if (queuedFor < TimeSpan.Zero)
            queuedFor = TimeSpan.Zero;
        // A cancel may have come first (while it was queued, or before it was even published): it never runs then.
        // Read here, with the slot held, right before the worker would start.
        switch (await CancelRecordedAsync(invocation, attempt).ConfigureAwait(false))
        {
            case (true, { } message):
                supervisor.TakeCancel(invocation.InvocationId);
                return () => PublishCancelledAsync(invocation, attempt, message, queuedFor);
            case (true, null):
                return NothingLeft; // finished, or held by another replica, which its cancel reaches
        }
        if (supervisor.TakeCancel(invocation.InvocationId) is { } cancelled)
            return () => PublishCancelledAsync(invocation, attempt, cancelled, queuedFor);

        WorkerSession session;
        try
        {
            session = await StartWorkerAsync(invocation, attempt).ConfigureAwait(false);
            session.Rerun = context.ReceiveContext.Redelivered || invocation.ParentRerun == true;
            session.Claimed = OwnershipClaims.Needed(context, invocation);
        }
        catch (Exception ex) when (ex is System.ComponentModel.Win32Exception or IOException or InvalidOperationException)
        {
            InvocationLog.SpawnFailed(logger, invocation.InvocationId, ex);
            return () => PublishCompletedAsync(context, invocation, attempt, 0, queuedFor, TimeSpan.Zero,
                SessionOutcome.Failed(InvocationErrorTypes.SpawnFailed, $"could not start the worker '{_options.EffectiveWorkerCommand}': {ex.Message}"));
        }

        session.QueuedFor = queuedFor;
        // A cancel that came while the worker was being started (the saga sent it here, the session did not exist yet).
        if (supervisor.TakeCancel(invocation.InvocationId) is { } lateCancel)
            session.Cancel(lateCancel);
        RunnerMetrics.InvocationStarted(invocation.TaskName, queuedFor);
        // The worker gets its invocation first; the Started event's broker round trip then overlaps its start-up.
        session.Send(new StartInvocationMessage
        {
            InvocationId = invocation.InvocationId,
            TaskName = invocation.TaskName,
            Arguments = invocation.Arguments,
            ParentInvocationId = invocation.ParentInvocationId,
            Attempt = attempt,
            TraceParent = Activity.Current?.Id,
            Reuse = session.ReuseOffered,
        });
        InvocationLog.Started(logger, invocation.InvocationId, invocation.TaskName, session.Pid, attempt);
        // InvocationStarted is for subscribers; the saga does not need it (TrackInvocation). The worker runs while it
        // is confirmed; it is out before the invocation's completion or wait.
        var startedEvent = PublishStartedAsync(session);
        return await DriveAsync(session, startedEvent).ConfigureAwait(false);
    }

    async Task PublishStartedAsync(WorkerSession session)
    {
        try
        {
            await PublishReliablyAsync(bus, session.InvocationId, new InvocationStarted
            {
                InvocationId = session.InvocationId,
                TaskName = session.Invocation.TaskName,
                ParentInvocationId = session.Invocation.ParentInvocationId,
                RunnerInstance = _options.EffectiveInstanceId,
                RunnerAddress = InstanceAddress,
                ProcessId = session.Pid,
                Attempt = session.Attempt,
                StartedAt = session.StartedAt,
            }).ConfigureAwait(false);
        }
        catch (Exception)
        {
            // Given up after PublishPatience (logged): the invocation itself does not depend on this event.
        }
    }

    /// <summary>
    /// Records the attempt in the saga (owner, process, what was asked for), once per session, so the saga can
    /// resume it, show it in <c>status</c> and run it again if this replica dies without its delivery.
    /// </summary>
    Task TrackAsync(WorkerSession session) =>
        session.TrackOnceAsync(s => PublishReliablyAsync(bus, s.InvocationId, new Saga.Messages.TrackInvocation
        {
            InvocationId = s.InvocationId,
            Invocation = s.Invocation,
            RunnerInstance = _options.EffectiveInstanceId,
            RunnerAddress = InstanceAddress,
            ProcessId = s.Pid,
            Attempt = s.Attempt,
            StartedAt = s.StartedAt,
        }));

    /// <summary>Tracks a new run that has neither ended nor waited within <see cref="RunnerOptions.TrackAfter"/>.</summary>
    async Task TrackWhenLongAsync(WorkerSession session, Task running)
    {
        try
        {
            await running.WaitAsync(_options.TrackAfter).ConfigureAwait(false);
            return;
        }
        catch (TimeoutException)
        {
        }
        catch (Exception)
        {
            return; // the driver deals with a run that failed
        }
        try
        {
            await TrackAsync(session).ConfigureAwait(false);
        }
        catch (Exception)
        {
            // Given up after PublishPatience (logged); a wait of this session would abandon it then.
        }
    }

    /// <summary>
    /// A run goes on after its delivery was handed off or lost: from now on only the saga can bring it back if this
    /// replica dies. A hand-off waits for the record; a lost delivery cannot wait for the broker, its record goes
    /// out when the connection is back.
    /// </summary>
    public async Task TrackReleasedRunAsync(Guid invocationId, CancellationToken delivery)
    {
        if (!supervisor.TryGet(invocationId, out var session))
            return;
        try
        {
            await TrackAsync(session).WaitAsync(delivery).ConfigureAwait(false);
        }
        catch (Exception)
        {
            // The delivery is gone or the publish gave up (logged); the record goes on in the background.
        }
    }

    /// <summary>
    /// Starts the worker; a start that fails for want of a resource (file descriptors, processes, memory: thousands
    /// of paused workers hold three pipes each) is tried again for a while, as running work ends and frees them.
    /// </summary>
    async Task<WorkerSession> StartWorkerAsync(RunInvocation invocation, int attempt)
    {
        var giveUpAt = time.GetUtcNow() + SpawnPatience;
        var pause = TimeSpan.FromMilliseconds(100);
        while (true)
        {
            try
            {
                return await supervisor.StartAsync(invocation, attempt).ConfigureAwait(false);
            }
            catch (System.ComponentModel.Win32Exception ex) when (IsResourceShortage(ex) && time.GetUtcNow() < giveUpAt)
            {
                InvocationLog.SpawnDeferred(logger, invocation.InvocationId, ex.Message);
            }
            await Task.Delay(pause, time).ConfigureAwait(false);
            pause = pause * 2 < MaxSpawnPause ? pause * 2 : MaxSpawnPause;
        }
    }

    // errno: EAGAIN 11, ENOMEM 12, ENFILE 23, EMFILE 24.
    static bool IsResourceShortage(System.ComponentModel.Win32Exception ex) => ex.NativeErrorCode is 11 or 12 or 23 or 24;

    static readonly TimeSpan SpawnPatience = TimeSpan.FromSeconds(60);
    static readonly TimeSpan MaxSpawnPause = TimeSpan.FromSeconds(2);

    /// <summary>
    /// Lets a session run, with its slot held, until it ends or waits; returns what is left once the slot is back:
    /// publishing the completion, or the wait of the paused worker.
    /// </summary>
    /// <remarks>
    /// Everything from here on publishes through the bus, not the consume context: the delivery may be gone long
    /// before the worker ends (consumer timeout, hand-off, lost channel), the bus is not.
    /// </remarks>
    /// <param name="session">The session, new or resumed.</param>
    /// <param name="startedEvent">For a new run: the publish of its Started event, and tracking starts.</param>
    async Task<Func<Task>> DriveAsync(WorkerSession session, Task? startedEvent = null)
    {
        IPublishEndpoint publisher = bus;
        SessionOutcome outcome;
        try
        {
            // The worker's life does not follow the delivery's: the broker may cancel a delivery (consumer timeout,
            // lost channel) while the invocation runs on. Only the shutdown coordinator takes a worker away.
            var running = session.RunAsync(new Relay(this, publisher));
            if (startedEvent is not null)
                Observe(TrackWhenLongAsync(session, running));
            outcome = await running.ConfigureAwait(false);
        }
        catch (Exception ex)
        {
            // A fault in the runner itself must still end the invocation, not leave its waiters hanging.
            InvocationLog.RunnerFault(logger, session.InvocationId, ex);
            session.Kill();
            await session.Exited.ConfigureAwait(false);
            outcome = SessionOutcome.Failed(InvocationErrorTypes.RunnerError, $"the runner failed while driving the worker: {ex.Message}", ex.ToString());
        }

        switch (outcome)
        {
            case SessionOutcome.Aborted:
                // Shutdown, fencing or the saga took the worker away; whoever did reroutes it (or leaves it to a newer
                // attempt). Ack only after that. Not finished here: a redelivery of this attempt may still have to run.
                await session.Rerouted.Task.ConfigureAwait(false);
                supervisor.Remove(session, finished: false);
                return NothingLeft;
            case SessionOutcome.Final final when ShouldRetry(session, final) is { } delay:
                await session.AwaitExitAfterFinalAsync().ConfigureAwait(false);
                supervisor.Remove(session);
                return async () =>
                {
                    InvocationLog.Retrying(logger, session.InvocationId, session.Attempt, final.Error?.ToString() ?? "", (long)delay.TotalMilliseconds);
                    await (startedEvent ?? Task.CompletedTask).ConfigureAwait(false);
                    // The delivery stays unacked during the back-off, so a crash now still redelivers the invocation.
                    await Task.Delay(delay, time).ConfigureAwait(false);
                    await PublishReliablyAsync(publisher, session.InvocationId,
                        session.Invocation with { Attempt = session.Attempt + 1, SubmittedAt = DateTimeOffset.UtcNow }).ConfigureAwait(false);
                };
            case SessionOutcome.Final final:
            {
                // The completion goes out while the worker exits; the slot stays taken until the process is gone, so
                // there are never more live running workers than slots.
                var ended = time.GetTimestamp();
                await (startedEvent ?? Task.CompletedTask).ConfigureAwait(false);
                // A Started event that took long to get out means the broker was out of reach while the run ended (a
                // partition, a restart): its delivery may have been redelivered, held and claimed elsewhere meanwhile.
                // So may a run admitted by a saga claim: its replica may have been presumed gone, the attempt rerouted and
                // the AbandonAttempt missed (it came before the worker started).
                var late = time.GetElapsedTime(ended) > LateCompletion || session.Claimed;
                var publishing = PublishCompletedAsync(publisher, session.Invocation, session.Attempt, session.Pid, session.QueuedFor, session.RunTime, final, checkFirst: late);
                await session.AwaitExitAfterFinalAsync().ConfigureAwait(false);
                supervisor.Remove(session);
                return () => publishing;
            }
            case SessionOutcome.Waiting when session.CancelMessage is { } cancelMessage:
                // Cancelled as it asked to wait: it never pauses; its worker is being killed.
                await session.Exited.ConfigureAwait(false);
                if (!session.TryClaimFinal())
                {
                    // Shutdown or the fence took it meanwhile: it goes their way, as an aborted run.
                    await session.Rerouted.Task.ConfigureAwait(false);
                    supervisor.Remove(session, finished: false);
                    return NothingLeft;
                }
                await (startedEvent ?? Task.CompletedTask).ConfigureAwait(false);
                supervisor.Remove(session);
                return () => PublishCompletedAsync(publisher, session.Invocation, session.Attempt, session.Pid, session.QueuedFor, session.RunTime,
                    CancelledOutcome(cancelMessage));
            case SessionOutcome.Waiting waiting:
                session.Pause();
                if (session.CancelMessage is not null)
                {
                    // The cancel came as it paused: nobody would drive it again. Completed as a paused cancel.
                    return async () =>
                    {
                        await (startedEvent ?? Task.CompletedTask).ConfigureAwait(false);
                        await CompletePausedCancelAsync(session).ConfigureAwait(false);
                    };
                }
                return async () =>
                {
                    InvocationLog.Paused(logger, session.InvocationId, session.Pid, waiting.InvocationIds.Count);
                    RunnerActivitySource.Paused(waiting.InvocationIds.Count);
                    // Like the completion, the wait must reach the saga or nobody will ever resume this worker; the saga
                    // must know the invocation first (to run it again if this replica dies while it waits).
                    await (startedEvent ?? Task.CompletedTask).ConfigureAwait(false);
                    await AbandonOnFailureAsync(session, TrackAsync(session)).ConfigureAwait(false);
                    await AbandonOnFailureAsync(session, PublishReliablyAsync(publisher, session.InvocationId, new InvocationWaitingFor
                    {
                        InvocationId = session.InvocationId,
                        WaitingFor = waiting.InvocationIds,
                        RunnerInstance = _options.EffectiveInstanceId,
                        RunnerAddress = InstanceAddress,
                        ProcessId = session.Pid,
                        Attempt = session.Attempt,
                        PausedAt = DateTimeOffset.UtcNow,
                        WaitSequence = session.WaitSequence,
                    })).ConfigureAwait(false);
                };
            default:
                throw new InvalidOperationException($"unexpected session outcome {outcome.GetType().Name}");
        }
    }

    async Task<Func<Task>> ResumeAndRunAsync(ConsumeContext context, WorkerSession session, IReadOnlyList<DependencyOutcome> results, TimeSpan pausedFor)
    {
        RunnerMetrics.InvocationResumed(session.Invocation.TaskName, pausedFor);
        // SIGCONT first, then the results in the background: they can be far larger than a pipe holds.
        session.Resume(new ResumeMessage { Results = results });
        InvocationLog.Resumed(logger, session.InvocationId, session.Pid, (long)pausedFor.TotalMilliseconds);
        await PublishReliablyAsync(context, session.InvocationId, new InvocationResumed
        {
            InvocationId = session.InvocationId,
            RunnerInstance = _options.EffectiveInstanceId,
            ProcessId = session.Pid,
            Attempt = session.Attempt,
            PausedFor = pausedFor,
            ResumedAt = DateTimeOffset.UtcNow,
            WaitSequence = session.WaitSequence,
        }).ConfigureAwait(false);
        return await DriveAsync(session).ConfigureAwait(false);
    }

    /// <summary>A resume arrived for a worker this replica no longer has (it restarted): have the saga run it again.</summary>
    public Task RecoverLostWorkerAsync(ConsumeContext context, Guid invocationId, int attempt) =>
        context.Publish(new Saga.Messages.RecoverInvocation
        {
            InvocationId = invocationId,
            Owner = _options.EffectiveInstanceId,
            Attempt = attempt,
            RecoveredBy = _options.EffectiveInstanceId,
        });

    /// <summary>The back-off before the next attempt, or null when this outcome is final.</summary>
    TimeSpan? ShouldRetry(WorkerSession session, SessionOutcome.Final final)
    {
        if (final.Status == InvocationStatus.Succeeded || final.Error is null || session.CancelMessage is not null)
            return null;
        var maxAttempts = session.Invocation.MaxAttempts ?? _options.DefaultMaxAttempts;
        if (session.Attempt >= maxAttempts)
            return null;
        var retryable = final.Retryable || _options.EffectiveRetryableErrors.Contains(final.Error.Type, StringComparer.Ordinal);
        if (!retryable)
            return null;
        var delay = _options.RetryDelay * Math.Pow(2, session.Attempt - 1);
        return delay < _options.MaxRetryDelay ? delay : _options.MaxRetryDelay;
    }

    /// <summary>Runs the invocation again, as a new attempt, on whichever replica takes it (shutdown, recovery).</summary>
    public Task RerouteAsync(IPublishEndpoint publisher, RunInvocation invocation, int attempt, CancellationToken cancellationToken) =>
        publisher.Publish(invocation with { Attempt = attempt + 1, SubmittedAt = DateTimeOffset.UtcNow }, cancellationToken);

    /// <summary>
    /// Whether the saga holds a cancel for this invocation, read by id from the saga store before its worker starts.
    /// (true, message): nobody else holds it and it is not final, so it is completed here as Cancelled without a worker.
    /// (true, null): cancelled and final already, or held by another replica (a duplicate of its message), which the
    /// cancel reaches: nothing to do. (false, _): run it. A store that cannot be read does not stop the run: the
    /// cancel then reaches it once the saga hears of it (its track or wait).
    /// </summary>
    async Task<(bool Cancelled, string? Message)> CancelRecordedAsync(RunInvocation invocation, int attempt)
    {
        Saga.InvocationState saga;
        try
        {
            if (await sagas.ReadStateAsync(invocation.InvocationId, CancellationToken.None).ConfigureAwait(false) is not { } stored)
                return (false, null);
            saga = stored;
        }
        catch (Exception ex)
        {
            InvocationLog.CancelCheckFailed(logger, invocation.InvocationId, ex.Message);
            return (false, null);
        }
        if (saga.CancelMessage is not { } message)
            return (false, null);
        var final = Saga.InvocationTransitions.FinalStatuses.Contains(saga.CurrentState);
        var heldElsewhere = saga.OwnerInstance is { } owner && owner != _options.EffectiveInstanceId;
        return final || heldElsewhere || attempt < saga.Attempt ? (true, null) : (true, message);
    }

    /// <summary>Completes an invocation that never ran here as Cancelled (its cancel came first).</summary>
    public Task PublishCancelledAsync(RunInvocation invocation, int attempt, string message, TimeSpan queuedFor = default)
    {
        InvocationLog.CancelledBeforeRun(logger, invocation.InvocationId, attempt, message);
        return PublishCompletedAsync(bus, invocation, attempt, 0, queuedFor, TimeSpan.Zero, CancelledOutcome(message));
    }

    static SessionOutcome.Final CancelledOutcome(string message) =>
        new(InvocationStatus.Cancelled, null, new InvocationError { Type = InvocationErrorTypes.Cancelled, Message = message });

    /// <summary>
    /// The saga asks this replica to cancel an attempt it holds. A running worker gets SIGTERM, and SIGKILL after the
    /// kill grace, and its driver completes it as Cancelled; a paused one (nobody drives it) is killed at once and
    /// completed here. The sub-invocations it started are cancelled too. One not here (yet) is remembered: a run
    /// granted here that has not started then never starts.
    /// </summary>
    public async Task CancelHeldAsync(Guid invocationId, int attempt, string message)
    {
        if (!supervisor.TryGet(invocationId, out var session) || session.Attempt != attempt)
        {
            supervisor.RememberCancel(invocationId, message);
            return;
        }
        if (session.CancelMessage is not null)
            return; // cancelled already (the saga may ask again as the wait it holds reaches it)
        InvocationLog.Cancelling(logger, invocationId, attempt, session.State, session.Pid, message);
        session.Cancel(message);
        if (session.CancelMessage is null)
            return; // it ended (or its process moved on) first: nothing to cancel
        if (session.State == WorkerState.Paused)
            await CompletePausedCancelAsync(session).ConfigureAwait(false);
        await CancelChildrenAsync(session, session.Children).ConfigureAwait(false);
    }

    /// <summary>
    /// A paused worker nobody drives: killed at once and completed as Cancelled here, unless a resume (whose driver
    /// then sees the cancel), shutdown or the fence took it first.
    /// </summary>
    async Task CompletePausedCancelAsync(WorkerSession session)
    {
        if (session.CancelMessage is not { } message || !session.TryClaimResume(0) || !session.TryClaimFinal())
            return;
        try
        {
            await session.CancelPausedAsync(message).ConfigureAwait(false);
            await PublishCompletedAsync(bus, session.Invocation, session.Attempt, session.Pid, session.QueuedFor, session.RunTime, CancelledOutcome(message))
                .ConfigureAwait(false);
        }
        finally
        {
            supervisor.Remove(session);
        }
    }

    /// <summary>Passes a cancel down to sub-invocations a cancelled worker started.</summary>
    async Task CancelChildrenAsync(WorkerSession session, IEnumerable<Guid> children)
    {
        foreach (var child in children)
        {
            try
            {
                await bus.Publish(new CancelInvocation
                {
                    InvocationId = child,
                    Reason = $"its parent {session.InvocationId} was cancelled ({session.CancelMessage})",
                    RequestedBy = session.InvocationId.ToString(),
                    OnlyIfChildOf = session.InvocationId,
                }).ConfigureAwait(false);
            }
            catch (Exception ex)
            {
                InvocationLog.CompletionPublishFailed(logger, child, nameof(CancelInvocation), ex.Message);
            }
        }
    }

    /// <summary>Publishes the single Failed completion of a message that cannot run at all.</summary>
    public Task PublishRejectedAsync(RunInvocation invocation, string reason) =>
        PublishCompletedAsync(bus, invocation, 1, 0, TimeSpan.Zero, TimeSpan.Zero,
            SessionOutcome.Failed(InvocationErrorTypes.InvalidInvocation, reason));

    static readonly TimeSpan LateCompletion = TimeSpan.FromSeconds(1);

    /// <param name="checkFirst">Read the saga store before the first publish too (<see cref="AlreadyRecordedAsync"/>), not only before a retry.</param>
    async Task PublishCompletedAsync(IPublishEndpoint publisher, RunInvocation invocation, int attempt, int pid, TimeSpan queuedFor, TimeSpan runFor,
        SessionOutcome.Final final, bool checkFirst = false)
    {
        InvocationLog.Completed(logger, invocation.InvocationId, invocation.TaskName, final.Status, (long)runFor.TotalMilliseconds,
            final.Error is null ? "" : $": {final.Error}");
        RunnerMetrics.InvocationCompleted(invocation.TaskName, final.Status, runFor, pid);
        RunnerActivitySource.Completed(final.Status, final.Error?.Type);
        var completed = new InvocationCompleted
        {
            InvocationId = invocation.InvocationId,
            TaskName = invocation.TaskName,
            ParentInvocationId = invocation.ParentInvocationId,
            Status = final.Status,
            Result = final.Result,
            Error = final.Error,
            RunnerInstance = _options.EffectiveInstanceId,
            ProcessId = pid,
            Attempt = attempt,
            QueuedFor = queuedFor,
            RunFor = runFor,
            CompletedAt = DateTimeOffset.UtcNow,
        };
        // The completion is the one thing that must get out: ride out a broker restart rather than drop it. A reply
        // address gets its copy beside it; the completion exchange stays the record (the saga reads it there).
        var publishing = ReliablyAsync(invocation.InvocationId, nameof(InvocationCompleted), Fenced(checkFirst,
            () => AlreadyRecordedAsync(invocation.InvocationId, attempt),
            // Later attempts go through the bus: a consume context whose delivery was lost cancels its own publishes.
            (retry, token) => (retry ? bus : publisher).Publish(completed, token)));
        if (invocation.ReplyTo is { Length: > 0 } replyTo)
            await Task.WhenAll(publishing, ReplyAsync(invocation.InvocationId, attempt, replyTo, completed, checkFirst)).ConfigureAwait(false);
        else
            await publishing.ConfigureAwait(false);
    }

    /// <summary>
    /// Before a completion is published again (its first publish failed or was never confirmed: a partition, a broker
    /// restart): whether the saga has ended the invocation already, which means the first publish did reach the broker
    /// (or another attempt ended it), or has moved on to a newer attempt (this replica was presumed gone and the
    /// invocation rerouted). Either way a second completion would only tell subscribers the invocation ended twice. A
    /// store that cannot be read says no: the completion goes out.
    /// </summary>
    /// <param name="finalIsEnough">
    /// True for the completion event (a final saga means the completion exchange had it). False for the reply copy,
    /// which has its own queue: it is dropped only when another attempt or replica owns the outcome.
    /// </param>
    async Task<bool> AlreadyRecordedAsync(Guid invocationId, int attempt, bool finalIsEnough = true)
    {
        try
        {
            if (await sagas.ReadStateAsync(invocationId, CancellationToken.None).ConfigureAwait(false) is not { } saga)
                return false;
            var final = Saga.InvocationTransitions.FinalStatuses.Contains(saga.CurrentState);
            // Another replica claimed this attempt (it got the redelivery of the delivery this replica lost, and held
            // it until this replica would have fenced itself): that replica runs it and completes it.
            var takenOver = saga.Attempt == attempt && saga.OwnerInstance is { } owner && owner != _options.EffectiveInstanceId;
            if (!(final && finalIsEnough) && saga.Attempt <= attempt && !takenOver)
                return false;
            InvocationLog.CompletionNotRepeated(logger, invocationId, attempt, saga.CurrentState, saga.Attempt);
            return true;
        }
        catch (Exception)
        {
            return false;
        }
    }

    /// <summary>
    /// Sends the completion to the publisher's reply address, with the same patience as the completion itself. It
    /// never fails the invocation: a reply that cannot be sent is logged, and the completion exchange still has it.
    /// </summary>
    async Task ReplyAsync(Guid invocationId, int attempt, string replyTo, InvocationCompleted completed, bool checkFirst)
    {
        try
        {
            await ReliablyAsync(invocationId, "InvocationCompleted reply", Fenced(checkFirst,
                () => AlreadyRecordedAsync(invocationId, attempt, finalIsEnough: false),
                (_, token) => replies.SendAsync(replyTo, completed, token))).ConfigureAwait(false);
        }
        catch (Exception ex)
        {
            InvocationLog.ReplyFailed(logger, invocationId, replyTo, ex.Message);
        }
    }

    /// <summary>
    /// One attempt of a completion's publish (or reply), fenced: the saga store is read first on a retry (or when
    /// <paramref name="checkFirst"/>), and the publish runs under <see cref="Recovery.BrokerContact.FenceToken"/>. An
    /// attempt that read the saga before this replica was cut off must not go out after its peers, taking it for gone,
    /// rerouted the invocation: so it is cancelled when the replica fences itself, and no attempt starts while fenced.
    /// The retry after contact returns reads the saga again and drops the completion if a newer attempt owns it. A
    /// publish confirmed before the fence reached the broker before any peer could reroute (docs/faults.md,
    /// "Ownership").
    /// </summary>
    Func<bool, CancellationToken, Task> Fenced(bool checkFirst, Func<Task<bool>> alreadyRecorded, Func<bool, CancellationToken, Task> publish) =>
        async (retry, token) =>
        {
            var fence = contact.FenceToken;
            if (fence.IsCancellationRequested)
                throw new OperationCanceledException("this replica is fenced (no broker contact); it reads the saga again once contact is back", fence);
            using var fenced = CancellationTokenSource.CreateLinkedTokenSource(token, fence);
            if (!(retry || checkFirst) || !await alreadyRecorded().ConfigureAwait(false))
                await publish(retry, fenced.Token).ConfigureAwait(false);
        };

    /// <summary>
    /// Awaits a publish the invocation cannot go on without (its track and wait). If even the retries give up, the
    /// worker is killed and forgotten (not counted as finished here), so nothing is left half-driven: the delivery
    /// faults, and the saga's recovery or a redelivery takes the invocation from there.
    /// </summary>
    async Task AbandonOnFailureAsync(WorkerSession session, Task publishing)
    {
        try
        {
            await publishing.ConfigureAwait(false);
        }
        catch (Exception)
        {
            session.Kill();
            await session.Exited.ConfigureAwait(false);
            supervisor.Remove(session, finished: false);
            throw;
        }
    }

    /// <summary>
    /// Publishes one of an invocation's own events, retrying until the broker takes it (a broker restart, a lost
    /// connection) for up to <see cref="RunnerOptions.PublishPatience"/>. Each attempt has its own time limit: a
    /// publish on a connection that died unnoticed waits for a confirm that never comes.
    /// </summary>
    Task PublishReliablyAsync<T>(IPublishEndpoint publisher, Guid invocationId, T message) where T : class =>
        // Later attempts go through the bus: a consume context whose delivery was lost cancels its own publishes.
        ReliablyAsync(invocationId, typeof(T).Name, (retry, token) => (retry ? bus : publisher).Publish(message, token));

    /// <summary>The retry loop of <see cref="PublishReliablyAsync{T}"/>, for any send to the broker.</summary>
    async Task ReliablyAsync(Guid invocationId, string what, Func<bool, CancellationToken, Task> send)
    {
        var giveUpAt = time.GetUtcNow() + _options.PublishPatience;
        var pause = TimeSpan.FromMilliseconds(250);
        var retry = false;
        while (true)
        {
            using var attempt = new CancellationTokenSource(PublishAttemptTimeout);
            try
            {
                // Not only cancelled at its limit but also no longer awaited a little after it: a publish on a connection
                // given up (a bus restart) was seen to ignore its token for good, and the completion then never went out.
                var sending = send(retry, attempt.Token);
                try
                {
                    await sending.WaitAsync(PublishAttemptTimeout + AbandonAfter, time).ConfigureAwait(false);
                }
                catch (TimeoutException) when (!sending.IsCompleted)
                {
                    _ = sending.ContinueWith(static t => _ = t.Exception, CancellationToken.None, TaskContinuationOptions.OnlyOnFaulted, TaskScheduler.Default);
                    throw;
                }
                return;
            }
            catch (Exception ex) when (time.GetUtcNow() < giveUpAt)
            {
                InvocationLog.CompletionPublishFailed(logger, invocationId, what, ex.Message);
            }
            catch (Exception)
            {
                InvocationLog.PublishGaveUp(logger, invocationId, what, _options.PublishPatience);
                throw;
            }
            retry = true;
            await Task.Delay(pause, time).ConfigureAwait(false);
            pause = pause * 2 < MaxPublishPause ? pause * 2 : MaxPublishPause;
        }
    }

    static readonly TimeSpan PublishAttemptTimeout = TimeSpan.FromSeconds(15);
    static readonly TimeSpan AbandonAfter = TimeSpan.FromSeconds(5);
    static readonly TimeSpan MaxPublishPause = TimeSpan.FromSeconds(5);

    /// <summary>Publishes the sub-invocations a worker starts, as children of its invocation.</summary>
    sealed class Relay(InvocationExecutor executor, IPublishEndpoint publisher) : ISessionCallbacks
    {
        public async Task OnInvokeAsync(WorkerSession session, InvokeMessage invoke)
        {
            session.NoteChild(invoke.InvocationId);
            await executor.PublishReliablyAsync(publisher, session.InvocationId, new RunInvocation
            {
                InvocationId = invoke.InvocationId,
                TaskName = invoke.TaskName,
                Arguments = invoke.Arguments,
                ParentInvocationId = session.InvocationId,
                ParentAttempt = session.Attempt,
                ParentRerun = session.Rerun ? true : null,
                Timeout = invoke.Timeout,
                SubmittedAt = DateTimeOffset.UtcNow,
            }).ConfigureAwait(false);
            // Started while its parent was being cancelled: cancelled with it.
            if (session.CancelMessage is not null)
                await executor.CancelChildrenAsync(session, [invoke.InvocationId]).ConfigureAwait(false);
        }

        public void OnProgress(WorkerSession session, ProgressMessage progress) => executor.ReportProgress(session, progress);
    }

    /// <summary>
    /// A worker's progress report, throttled to one event per <see cref="RunnerOptions.ProgressInterval"/> per
    /// invocation (<see cref="ProgressThrottle"/>). Events go out in the background: they never slow the worker.
    /// </summary>
    void ReportProgress(WorkerSession session, ProgressMessage progress)
    {
        if (session.Ended)
            return;
        var (now, later) = session.Progress.Report(progress, time.GetUtcNow(), _options.ProgressInterval);
        if (now is not null)
            Observe(PublishProgressAsync(session, now));
        if (later is { } delay)
            Observe(PublishLaterAsync(session, delay));
    }

    async Task PublishLaterAsync(WorkerSession session, TimeSpan delay)
    {
        await Task.Delay(delay, time).ConfigureAwait(false);
        if (session.Progress.TakePending(time.GetUtcNow()) is { } pending && session.State is WorkerState.Running && !session.Ended)
            await PublishProgressAsync(session, pending).ConfigureAwait(false);
    }

    async Task PublishProgressAsync(WorkerSession session, ProgressMessage progress)
    {
        var message = new InvocationProgress
        {
            InvocationId = session.InvocationId,
            TaskName = session.Invocation.TaskName,
            Fraction = double.IsFinite(progress.Fraction) ? Math.Clamp(progress.Fraction, 0, 1) : 0,
            Message = progress.Message is { Length: > 1000 } text ? text[..1000] : progress.Message,
            ProcessId = session.Pid,
            Attempt = session.Attempt,
            ReportedAt = time.GetUtcNow(),
        };
        try
        {
            using var limit = new CancellationTokenSource(PublishAttemptTimeout);
            // A MassTransit reply address (a .NET client) gets it too, at the same time; a plain reply_to queue only
            // its completion.
            var toReply = session.Invocation.ReplyTo is { } replyTo && ReplySender.IsEndpointAddress(replyTo, out _)
                ? replies.SendAsync(replyTo, message, limit.Token)
                : Task.CompletedTask;
            await Task.WhenAll(bus.Publish(message, limit.Token), toReply).ConfigureAwait(false);
        }
        catch (Exception ex)
        {
            // Informational: a lost progress event is not retried.
            InvocationLog.CompletionPublishFailed(logger, session.InvocationId, nameof(InvocationProgress), ex.Message);
        }
    }
}
