using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using RunnerService.Hosting;

namespace RunnerService.Saga.Persistence;

/// <summary>
/// Removes finished saga records (Succeeded, Failed, TimedOut, Cancelled) not changed for
/// <see cref="RunnerOptions.RetainFinished"/>, in both stores, every replica in turn (a record another replica removed
/// first is simply gone). A finished record that an open invocation still waits for is kept: that waiter may still ask
/// for its outcome. Each removal re-reads the record under the store's lock, so one that changed meanwhile stays.
/// </summary>
sealed partial class SagaRetention(ISagaStore store, IOptions<RunnerOptions> options, TimeProvider time, ILogger<SagaRetention> logger) : BackgroundService
{
    const int Batch = 500;

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var retain = options.Value.RetainFinished;
        var interval = TimeSpan.FromTicks(Math.Clamp(retain.Ticks / 4, TimeSpan.FromSeconds(1).Ticks, TimeSpan.FromHours(1).Ticks));
        while (!stoppingToken.IsCancellationRequested)
        {
            try
            {
                await Task.Delay(interval, time, stoppingToken).ConfigureAwait(false);
                var (removed, kept) = await SweepAsync(time.GetUtcNow() - retain, stoppingToken).ConfigureAwait(false);
                if (removed > 0)
                    Removed(logger, removed, retain, kept);
            }
            catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
            {
                break;
            }
            catch (Exception ex)
            {
                SweepFailed(logger, ex);
            }
        }
    }

    /// <summary>Removes finished records unchanged since <paramref name="before"/>; returns how many were removed and kept for a waiter.</summary>
    public async Task<(int Removed, int Kept)> SweepAsync(DateTimeOffset before, CancellationToken cancellationToken)
    {
        IReadOnlyList<Guid> candidates;
        await using (var transaction = await store.BeginAsync(cancellationToken).ConfigureAwait(false))
        {
            candidates = await transaction.FindUnchangedSinceAsync([.. InvocationTransitions.FinalStatuses], before, Batch, cancellationToken).ConfigureAwait(false);
            await transaction.CommitAsync(cancellationToken).ConfigureAwait(false);
        }
        var removed = 0;
        var kept = 0;
        foreach (var id in candidates)
        {
            await using var transaction = await store.BeginAsync(cancellationToken).ConfigureAwait(false);
            if (await transaction.LoadAsync(id, cancellationToken).ConfigureAwait(false) is not { } stored
                || !InvocationTransitions.FinalStatuses.Contains(stored.State))
                continue;
            var saga = InvocationSagaRepositoryContextFactory.Deserialize(stored);
            if (saga.UpdatedAt >= before)
                continue;
            if (await AnyOpenAsync(saga.Waiters, cancellationToken).ConfigureAwait(false))
            {
                kept++;
                continue;
            }
            await transaction.DeleteAsync(id, cancellationToken).ConfigureAwait(false);
            await transaction.CommitAsync(cancellationToken).ConfigureAwait(false);
            removed++;
        }
        return (removed, kept);
    }

    async Task<bool> AnyOpenAsync(IEnumerable<Guid> waiters, CancellationToken cancellationToken)
    {
        foreach (var waiter in waiters)
        {
            if (await store.ReadAsync(waiter, cancellationToken).ConfigureAwait(false) is { } record && !InvocationTransitions.FinalStatuses.Contains(record.State))
                return true;
        }
        return false;
    }

    [LoggerMessage(EventId = 310, EventName = "RetentionRemoved", Level = LogLevel.Information,
        Message = "Retention: removed {Removed} finished saga record(s) unchanged for {Retain}; kept {Kept} that an open invocation still waits for")]
    static partial void Removed(ILogger logger, int removed, TimeSpan retain, int kept);

    [LoggerMessage(EventId = 311, EventName = "RetentionFailed", Level = LogLevel.Warning,
        Message = "Retention sweep failed; trying again next round")]
    static partial void SweepFailed(ILogger logger, Exception exception);
}
