using MassTransit;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using RunnerService.Hosting;
using RunnerService.Processes;
using RunnerService.Saga;
using RunnerService.Saga.Messages;
using RunnerService.Saga.Persistence;
using RunnerService.Slots;
using RunnerService.Telemetry;

namespace RunnerService.Recovery;

/// <summary>
/// Publishes this replica's heartbeat, and periodically finds invocations whose owner is gone — a replica that
/// stopped heartbeating, or this replica's previous life (same instance id, its workers died with it) — and asks the
/// saga to run them again. The saga applies a recovery only if the owner and attempt still match: exactly once.
/// </summary>
sealed class RecoveryService(
    IBus bus,
    IBusControl busControl,
    ISagaStore store,
    RunnerRegistry registry,
    WorkerSupervisor supervisor,
    SlotPool slots,
    IOptions<RunnerOptions> options,
    TimeProvider time,
    BrokerContact contact,
    IHostApplicationLifetime lifetime,
    ILogger<RecoveryService> logger) : BackgroundService
{
    static readonly string[] OwnedStates = ["Running", "Waiting", "Resuming"];
    readonly RunnerOptions _options = options.Value;

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        contact.Confirmed();
        // Three loops, so a slow saga store never delays a heartbeat (peers would take the silence for death).
        await Task.WhenAll(HeartbeatAsync(stoppingToken), CheckLoopAsync(stoppingToken), FenceAsync(stoppingToken)).ConfigureAwait(false);
        await _restart.ConfigureAwait(false); // a restart under way ends before MassTransit's own stop of the bus
    }

    Task CheckLoopAsync(CancellationToken stoppingToken) =>
        new Rounds("recovery check", ct => WithConnectionAsync(CheckAsync, ct), _options.RecoveryInterval, _options.RecoveryInterval, maxUnfinished: 2, time, logger).RunAsync(waitFirst: true, stoppingToken);

    /// <summary>
    /// Self-fencing: peers presume this replica gone after <see cref="RunnerOptions.StaleAfter"/> plus a heartbeat
    /// interval without its heartbeat, and then run its invocations again. So before that, without broker contact for
    /// three quarters of <see cref="RunnerOptions.StaleAfter"/>, this replica kills its own workers: two attempts of
    /// one invocation never run at once, whichever side of a partition this replica is on.
    /// </summary>
    async Task FenceAsync(CancellationToken stoppingToken)
    {
        while (!stoppingToken.IsCancellationRequested)
        {
            try
            {
                await Task.Delay(FenceCheck, time, stoppingToken).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                return;
            }
            if (contact.OwnQueueDeaf && time.GetUtcNow() - _deafLogged > _options.StaleAfter)
            {
                _deafLogged = time.GetUtcNow();
                RecoveryLog.OwnQueueDeaf(logger, _options.InstanceQueue, contact.EchoSilence, supervisor.Sessions.Count(s => s.State == WorkerState.Paused));
            }
            var connected = busControl.CheckHealth().Status == BusHealthStatus.Healthy;
            _connectedSince = connected ? _connectedSince ?? time.GetUtcNow() : null;
            if (_restart.IsCompleted && contact.PublishingStuck(time.GetUtcNow() - _connectedSince) && time.GetUtcNow() - _lastRestart > _options.StaleAfter * 2)
            {
                _lastRestart = time.GetUtcNow();
                _restart = RestartBusAsync(stoppingToken);
            }
            if (!contact.MustFence)
                continue;
            contact.Fence();
            var silent = contact.Silence;
            foreach (var session in supervisor.Sessions.ToArray())
            {
                // Nothing is published again from here: a running invocation comes back by the broker's redelivery
                // (its delivery died with the connection), a tracked one by the peers' recovery. A newer attempt
                // published here would supersede a peer's legitimate takeover of the same attempt and run beside it.
                if (await supervisor.AbandonAsync(session.InvocationId, session.Attempt).ConfigureAwait(false))
                    RecoveryLog.Fenced(logger, session.InvocationId, session.Attempt, session.Pid, silent);
            }
        }
    }

    DateTimeOffset _lastRestart = DateTimeOffset.MinValue;
    DateTimeOffset? _connectedSince;
    Task _restart = Task.CompletedTask;
    CancellationTokenSource _connection = new();

    /// <summary>A round whose publishes end when the bus is restarted (their connection is given up), or at the stop.</summary>
    async Task WithConnectionAsync(Func<CancellationToken, Task> round, CancellationToken stoppingToken)
    {
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(stoppingToken, Volatile.Read(ref _connection).Token);
        await round(linked.Token).ConfigureAwait(false);
    }

    /// <summary>
    /// Replaces the bus's connection when it consumes but cannot publish (<see cref="BrokerContact.PublishingStuck"/>):
    /// stop and start the bus, again until it is healthy. Its workers were fenced already; held deliveries go back to
    /// the queue with the old channels and come again on the new ones.
    /// </summary>
    /// <remarks>
    /// The stop is never given up on. One cancelled half way (channel calls stuck on the dead connection hold it until
    /// their own timeouts) leaves MassTransit's host started, some endpoints half stopped and the connection open, while
    /// the bus forgets its handle: a start then hands back that host ("already started"), later ones fault on the
    /// half-stopped endpoints, and endpoints reported ready consumed nothing (seen in RecoveryTests' broker restart). A
    /// slow stop costs nothing here: the workers are fenced already, and only the replica's own stop ends it sooner.
    /// </remarks>
    async Task RestartBusAsync(CancellationToken stoppingToken)
    {
        RecoveryLog.RestartingBus(logger, contact.Silence);
        // The rounds' publishes that hang on the old connection end now, so new rounds can start after the restart.
        var old = Interlocked.Exchange(ref _connection, new CancellationTokenSource());
        await old.CancelAsync().ConfigureAwait(false); // not disposed: a round may be linking to it right now
        var pause = TimeSpan.FromSeconds(2);
        for (var round = 1; !stoppingToken.IsCancellationRequested; round++)
        {
            try
            {
                var stopping = time.GetTimestamp();
                if (!await FinishesWithinAsync(busControl.StopAsync(stoppingToken), BusStopGiveUp, time, stoppingToken).ConfigureAwait(false))
                {
                    GiveUpOnItself();
                    return;
                }
                stoppingToken.ThrowIfCancellationRequested(); // the replica stops: MassTransit's own stop takes over
                RecoveryLog.BusStopped(logger, round, time.GetElapsedTime(stopping));
                using var start = CancellationTokenSource.CreateLinkedTokenSource(stoppingToken);
                start.CancelAfter(TimeSpan.FromSeconds(60));
                await busControl.StartAsync(start.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
            {
                return;
            }
            catch (Exception ex)
            {
                RecoveryLog.RoundFailed(logger, ex);
            }
            var health = busControl.CheckHealth();
            if (health.Status == BusHealthStatus.Healthy)
            {
                RecoveryLog.BusRestarted(logger, round);
                return;
            }
            RecoveryLog.BusRestartDidNotTake(logger, round, health.Description, pause);
            try
            {
                await Task.Delay(pause, time, stoppingToken).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                return;
            }
            pause = pause * 2 < TimeSpan.FromSeconds(30) ? pause * 2 : TimeSpan.FromSeconds(30);
        }
    }

    /// <summary>
    /// How long a restart's stop of the bus may take before the replica gives up on healing itself. Stops normally take
    /// 5 to 45 s (channel calls on the dead connection time out); one seen in the 10,000-invocation chaos run of
    /// 2026-11-30 never returned, and the replica sat deaf (heartbeating, so never presumed gone) with its deliveries
    /// held for the rest of the run.
    /// </summary>
    internal static readonly TimeSpan BusStopGiveUp = TimeSpan.FromMinutes(3);

    /// <summary>How long the replica's own graceful stop gets after it gave up on itself, before the process ends hard.</summary>
    static readonly TimeSpan ExitBackstop = TimeSpan.FromMinutes(3);

    /// <summary>True when <paramref name="task"/> ends within <paramref name="limit"/> (its own fault is thrown); false when it is still running.</summary>
    internal static async Task<bool> FinishesWithinAsync(Task task, TimeSpan limit, TimeProvider time, CancellationToken cancellationToken)
    {
        try
        {
            await task.WaitAsync(limit, time, cancellationToken).ConfigureAwait(false);
            return true;
        }
        catch (TimeoutException) when (!task.IsCompleted)
        {
            _ = task.ContinueWith(static t => _ = t.Exception, CancellationToken.None, TaskContinuationOptions.OnlyOnFaulted, TaskScheduler.Default);
            return false;
        }
    }

    /// <summary>
    /// The bus cannot be stopped, so it cannot be restarted: the replica stops itself. Its connection closes with the
    /// process, so the deliveries it holds go back to the queue; its heartbeats end, so peers reroute the work the saga
    /// records it owns. An orchestrator or service manager starts it again. If even the graceful stop hangs, the process
    /// ends hard after <see cref="ExitBackstop"/> (its workers die with it, by their parent-death signal).
    /// </summary>
    void GiveUpOnItself()
    {
        RecoveryLog.BusStopHung(logger, BusStopGiveUp);
        lifetime.StopApplication();
        _ = Task.Run(async () =>
        {
            await Task.Delay(ExitBackstop, time).ConfigureAwait(false);
            RecoveryLog.ExitingHard(logger, ExitBackstop);
            Environment.FailFast($"RunnerService: the bus did not stop within {BusStopGiveUp} of a restart, nor the replica within {ExitBackstop} after that");
        });
    }

    static readonly TimeSpan FenceCheck = TimeSpan.FromSeconds(1);
    DateTimeOffset _deafLogged = DateTimeOffset.MinValue;

    Task HeartbeatAsync(CancellationToken stoppingToken) =>
        new Rounds("heartbeat", ct => WithConnectionAsync(BeatAsync, ct), _options.HeartbeatInterval, _options.HeartbeatInterval / 2, maxUnfinished: 4, time, logger).RunAsync(waitFirst: false, stoppingToken);

    /// <summary>One heartbeat: published to the peers, then echoed through this replica's own queue.</summary>
    async Task BeatAsync(CancellationToken stoppingToken)
    {
        var address = _options.InstanceAddress;
        await bus.Publish(new RunnerHeartbeat
        {
            Instance = _options.EffectiveInstanceId,
            Address = address,
            At = time.GetUtcNow(),
            SlotsTotal = slots.Total,
            SlotsBusy = slots.Busy,
            WorkersAlive = supervisor.Alive,
        }, stoppingToken).ConfigureAwait(false);
        contact.Confirmed();
        var own = await bus.GetSendEndpoint(address).ConfigureAwait(false);
        await own.Send(new InstanceEcho { Instance = _options.EffectiveInstanceId, At = time.GetUtcNow() }, stoppingToken).ConfigureAwait(false);
    }

    async Task CheckAsync(CancellationToken cancellationToken)
    {
        IReadOnlyList<StoredSaga> candidates;
        await using (var transaction = await store.BeginAsync(cancellationToken).ConfigureAwait(false))
        {
            candidates = await transaction.LoadOwnedAsync(OwnedStates, cancellationToken).ConfigureAwait(false);
            await transaction.CommitAsync(cancellationToken).ConfigureAwait(false);
        }
        var me = _options.EffectiveInstanceId;
        var now = time.GetUtcNow();
        foreach (var stored in candidates)
        {
            var saga = InvocationSagaRepositoryContextFactory.Deserialize(stored);
            // A resume the saga sent that never arrived (lost with a connection): the worker here still waits for it.
            if (saga.OwnerInstance == me && saga.CurrentState == "Resuming" && now - saga.UpdatedAt >= _options.RecoveryInterval
                && supervisor.TryGet(saga.CorrelationId, out var waiting) && waiting.Attempt == saga.Attempt
                && waiting.WaitSequence == saga.WaitSequence && waiting.AwaitsResume)
            {
                RecoveryLog.ResendingResume(logger, saga.CorrelationId, saga.WaitSequence, now - saga.UpdatedAt);
                await bus.Publish(new ResendResume { InvocationId = saga.CorrelationId, Attempt = saga.Attempt, WaitSequence = saga.WaitSequence },
                    cancellationToken).ConfigureAwait(false);
                continue;
            }
            // Recently touched invocations are in motion (an event may still be on its way), not orphaned.
            if (now - saga.UpdatedAt < _options.StaleAfter)
                continue;
            // A replica that does not hear its own heartbeat does not hear the others' either (its heartbeat queue or
            // consumer is gone, the broker is away): it does not take its peers for dead (RunnerRegistry.IsGone).
            var lost = saga.OwnerInstance == me
                ? !supervisor.Knows(saga.CorrelationId)
                : registry.IsGone(saga.OwnerInstance!);
            if (!lost)
                continue;
            RecoveryLog.Recovering(logger, saga.CorrelationId, saga.TaskName ?? "", saga.CurrentState, saga.OwnerInstance!, saga.Attempt);
            RunnerMetrics.Recovered();
            await bus.Publish(new RecoverInvocation
            {
                InvocationId = saga.CorrelationId,
                Owner = saga.OwnerInstance!,
                Attempt = saga.Attempt,
                RecoveredBy = me,
            }, cancellationToken).ConfigureAwait(false);
        }
    }
}

static partial class RecoveryLog
{
    [LoggerMessage(EventId = 300, EventName = "Recovering", Level = LogLevel.Warning,
        Message = "Invocation {InvocationId} ({TaskName}) is {State} on replica {Owner} (attempt {Attempt}), which is gone: asking the saga to run it again")]
    public static partial void Recovering(ILogger logger, Guid invocationId, string taskName, string state, string owner, int attempt);

    [LoggerMessage(EventId = 302, EventName = "Fenced", Level = LogLevel.Error,
        Message = "No broker contact for {Silent}: killing the worker of invocation {InvocationId} attempt {Attempt} (pid {Pid}) before peers presume this replica gone and run it again")]
    public static partial void Fenced(ILogger logger, Guid invocationId, int attempt, int pid, TimeSpan silent);

    [LoggerMessage(EventId = 303, EventName = "ResendingResume", Level = LogLevel.Warning,
        Message = "Invocation {InvocationId}: the saga answered wait {WaitSequence} {Since} ago, but no resume arrived; asking for it again")]
    public static partial void ResendingResume(ILogger logger, Guid invocationId, int waitSequence, TimeSpan since);

    [LoggerMessage(EventId = 304, EventName = "OwnQueueDeaf", Level = LogLevel.Critical,
        Message = "This replica's own queue {Queue} has delivered nothing for {Silence} while the broker takes its heartbeats: resumes cannot reach its {Paused} paused worker(s). Liveness and readiness fail until it delivers again; restart the replica (its shutdown reroutes them)")]
    public static partial void OwnQueueDeaf(ILogger logger, string queue, TimeSpan silence, int paused);

    [LoggerMessage(EventId = 306, EventName = "RestartingBus", Level = LogLevel.Critical,
        Message = "Nothing published has been confirmed for {Silence} while the bus is connected: the connection consumes but its publishes hang. Restarting the bus for a new connection")]
    public static partial void RestartingBus(ILogger logger, TimeSpan silence);

    [LoggerMessage(EventId = 307, EventName = "BusRestarted", Level = LogLevel.Warning,
        Message = "The bus was restarted with a new connection (round {Round}); every receive endpoint is ready")]
    public static partial void BusRestarted(ILogger logger, int round);

    [LoggerMessage(EventId = 309, EventName = "BusStopped", Level = LogLevel.Warning,
        Message = "Bus restart round {Round}: the bus stopped in {Took}; starting it")]
    public static partial void BusStopped(ILogger logger, int round, TimeSpan took);

    [LoggerMessage(EventId = 310, EventName = "BusStopHung", Level = LogLevel.Critical,
        Message = "The bus has not stopped {Limit} into its restart, so it cannot be restarted: this replica stops itself, so that its held deliveries go back to the queue and its peers take over its work (start it again)")]
    public static partial void BusStopHung(ILogger logger, TimeSpan limit);

    [LoggerMessage(EventId = 311, EventName = "ExitingHard", Level = LogLevel.Critical,
        Message = "The replica has not stopped {Backstop} after it gave up on itself: ending the process now")]
    public static partial void ExitingHard(ILogger logger, TimeSpan backstop);

    [LoggerMessage(EventId = 308, EventName = "BusRestartDidNotTake", Level = LogLevel.Error,
        Message = "Bus restart round {Round} did not take ({Health}): stopping and starting it again in {Pause}")]
    public static partial void BusRestartDidNotTake(ILogger logger, int round, string health, TimeSpan pause);

    [LoggerMessage(EventId = 305, EventName = "RoundUnfinished", Level = LogLevel.Warning,
        Message = "A {Round} round has not ended after {Waited} (a publish whose confirm never came, a stuck store call); the next one starts now without it ({Pending} left to end on their own)")]
    public static partial void RoundUnfinished(ILogger logger, string round, TimeSpan waited, int pending);

    [LoggerMessage(EventId = 301, EventName = "RecoveryRoundFailed", Level = LogLevel.Warning,
        Message = "Heartbeat or recovery round failed; trying again next round")]
    public static partial void RoundFailed(ILogger logger, Exception exception);
}
