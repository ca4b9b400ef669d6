using Microsoft.Extensions.Logging;

namespace RunnerService.Invocations;

/// <summary>How long a consume holds its delivery while the invocation it started runs on.</summary>
static class DeliveryHold
{
    /// <summary>
    /// Waits for <paramref name="running"/>, but no longer than <paramref name="holdLimit"/> (the broker's consumer
    /// timeout must not fire) and no longer than the delivery lives: when the channel is lost MassTransit cancels the
    /// delivery and waits for the consume to return before the connection can be rebuilt, so holding on would stall
    /// every publish of this replica. True when the run ended first; otherwise the run goes on without its delivery
    /// (logged), and it owns its own clean-up.
    /// </summary>
    public static async Task<bool> HoldAsync(Task running, TimeSpan holdLimit, CancellationToken delivery, ILogger logger, Guid invocationId)
    {
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(delivery);
        var limit = Task.Delay(holdLimit, stop.Token);
        var first = await Task.WhenAny(running, limit).ConfigureAwait(false);
        await stop.CancelAsync().ConfigureAwait(false); // no timer left behind per invocation
        if (first == running)
        {
            await running.ConfigureAwait(false);
            return true;
        }
        if (delivery.IsCancellationRequested)
            InvocationLog.DeliveryLost(logger, invocationId);
        else
            InvocationLog.HandedOff(logger, invocationId, holdLimit);
        return false;
    }
}
