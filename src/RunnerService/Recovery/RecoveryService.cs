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
    ISagaStore store,
    RunnerRegistry registry,
    WorkerSupervisor supervisor,
    SlotPool slots,
    IOptions<RunnerOptions> options,
    TimeProvider time,
    ILogger<RecoveryService> logger) : BackgroundService
{
    static readonly string[] OwnedStates = ["Running", "Waiting", "Resuming"];
    readonly RunnerOptions _options = options.Value;

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var address = new Uri($"queue:{_options.InstanceQueue}");
        var nextCheck = time.GetUtcNow() + _options.RecoveryInterval;
        while (!stoppingToken.IsCancellationRequested)
        {
            try
            {
                await bus.Publish(new RunnerHeartbeat
                {
                    Instance = _options.EffectiveInstanceId,
                    Address = address,
                    At = time.GetUtcNow(),
                    SlotsTotal = slots.Total,
                    SlotsBusy = slots.Busy,
                    WorkersAlive = supervisor.Alive,
                }, stoppingToken).ConfigureAwait(false);
                if (time.GetUtcNow() >= nextCheck)
                {
                    await CheckAsync(stoppingToken).ConfigureAwait(false);
                    nextCheck = time.GetUtcNow() + _options.RecoveryInterval;
                }
            }
            catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
            {
                break;
            }
            catch (Exception ex)
            {
                // The broker or the store may be away for a moment; the next round tries again.
                RecoveryLog.RoundFailed(logger, ex);
            }
            try
            {
                await Task.Delay(_options.HeartbeatInterval, time, stoppingToken).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                break;
            }
        }
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
            // Recently touched invocations are in motion (an event may still be on its way), not orphaned.
            if (now - saga.UpdatedAt < _options.StaleAfter)
                continue;
            var lost = saga.OwnerInstance == me
                ? !supervisor.TryGet(saga.CorrelationId, out _) && !supervisor.IsClaimed(saga.CorrelationId) && !supervisor.FinishedHere(saga.CorrelationId, attempt: 1)
                : registry.IsStale(saga.OwnerInstance!);
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

    [LoggerMessage(EventId = 301, EventName = "RecoveryRoundFailed", Level = LogLevel.Warning,
        Message = "Heartbeat or recovery round failed; trying again next round")]
    public static partial void RoundFailed(ILogger logger, Exception exception);
}
