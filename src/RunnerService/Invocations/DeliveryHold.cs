namespace RunnerService.Invocations;

/// <summary>How long a consume holds its delivery while the invocation it started runs on.</summary>
static class DeliveryHold
{
    /// <summary>
    /// Waits for <paramref name="running"/>, but no longer than <paramref name="holdLimit"/> (the broker's consumer
    /// timeout must not fire) and no longer than the delivery lives: when the channel is lost MassTransit cancels the
    /// delivery and waits for the consume to return before the connection can be rebuilt, so holding on would stall
    /// every publish of this replica. True when the run ended first; otherwise the run goes on without its delivery.
    /// </summary>
    public static async Task<HoldOutcome> HoldAsync(Task running, TimeSpan holdLimit, CancellationToken delivery)
    {
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(delivery);
        var limit = Task.Delay(holdLimit, stop.Token);
        var first = await Task.WhenAny(running, limit).ConfigureAwait(false);
        await stop.CancelAsync().ConfigureAwait(false); // no timer left behind per invocation
        if (first == running)
        {
            await running.ConfigureAwait(false);
            return HoldOutcome.Finished;
        }
        return delivery.IsCancellationRequested ? HoldOutcome.DeliveryLost : HoldOutcome.HoldLimitReached;
    }
}

enum HoldOutcome
{
    Finished,
    HoldLimitReached,
    DeliveryLost,
}
