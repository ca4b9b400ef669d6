using Microsoft.Extensions.Logging;

namespace RunnerService.Recovery;

/// <summary>
/// A round (a heartbeat, a recovery check) run once per interval, that no single stuck round can stop. A round not
/// ended within its patience is left to end on its own, never cancelled, and the next one starts at once.
/// RabbitMQ.Client 7.2 can lose the confirm of a publish in flight when the broker restarts
/// (rabbitmq-dotnet-client#1930): awaited, that one heartbeat publish silenced the replica for good though its
/// connection was back (intake stopped, workers fenced; CI saw it in the broker-restart test). Cancelling it instead
/// faulted the channel again whenever the cancel landed while the bus re-declared its topology. At most
/// <paramref name="maxUnfinished"/> rounds are left to end on their own at once; no new round starts until one of
/// them ends, so a long outage does not pile up publishes or store connections.
/// </summary>
sealed class Rounds(string name, Func<CancellationToken, Task> round, TimeSpan interval, TimeSpan patience, int maxUnfinished, TimeProvider time, ILogger logger)
{
    readonly ILogger _logger = logger;
    int _unfinished;

    /// <summary>Rounds left to end on their own that have not ended yet.</summary>
    public int Unfinished => Volatile.Read(ref _unfinished);

    /// <summary>Runs rounds until <paramref name="stoppingToken"/> fires; the first one after an interval if <paramref name="waitFirst"/>.</summary>
    public async Task RunAsync(bool waitFirst, CancellationToken stoppingToken)
    {
        if (waitFirst && !await PauseAsync(stoppingToken).ConfigureAwait(false))
            return;
        while (!stoppingToken.IsCancellationRequested)
        {
            if (Unfinished >= maxUnfinished)
            {
                // As many rounds as allowed are still going: no new one until one of them ends.
                if (!await PauseAsync(stoppingToken).ConfigureAwait(false))
                    break;
                continue;
            }
            var running = round(stoppingToken);
            try
            {
                await running.WaitAsync(patience, time, stoppingToken).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
            {
                break;
            }
            catch (TimeoutException) when (!running.IsCompleted || !running.IsFaulted)
            {
                // Ended as the patience ran out counts as ended; a round that is really still going is left to end.
                if (!running.IsCompleted)
                {
                    LeaveToEnd(running);
                    continue;
                }
            }
            catch (Exception ex)
            {
                // The broker or the store may be away for a moment; the next round tries again.
                RecoveryLog.RoundFailed(_logger, ex);
            }
            if (!await PauseAsync(stoppingToken).ConfigureAwait(false))
                break;
        }
    }

    async Task<bool> PauseAsync(CancellationToken stoppingToken)
    {
        try
        {
            await Task.Delay(interval, time, stoppingToken).ConfigureAwait(false);
            return true;
        }
        catch (OperationCanceledException)
        {
            return false;
        }
    }

    void LeaveToEnd(Task running)
    {
        var pending = Interlocked.Increment(ref _unfinished);
        RecoveryLog.RoundUnfinished(_logger, name, patience, pending);
        running.ContinueWith(static (ended, state) =>
        {
            var self = (Rounds)state!;
            Interlocked.Decrement(ref self._unfinished);
            if (ended.Exception is { } ex)
                RecoveryLog.RoundFailed(self._logger, ex.GetBaseException());
        }, this, CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
    }
}
