using MassTransit;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using RunnerService.Contracts;
using RunnerService.Hosting;
using RunnerService.Recovery;
using RunnerService.Saga;
using RunnerService.Saga.Messages;

namespace RunnerService.Invocations;

/// <summary>
/// Asks the saga for ownership before a redelivered or repeated attempt starts, so no invocation runs twice at the
/// same time. First deliveries skip it: they cannot meet another run of the same attempt, and they are the hot path.
/// </summary>
sealed class OwnershipClaims(
    IRequestClient<ClaimInvocation> client,
    RunnerRegistry registry,
    IOptions<RunnerOptions> options,
    TimeProvider time,
    ILogger<OwnershipClaims> logger)
{
    static readonly TimeSpan MaxClaimPause = TimeSpan.FromSeconds(30);

    /// <summary>
    /// True when this replica may run the attempt. While another replica that still heartbeats owns it, waits (up to
    /// the stale limit) in case it is gone; takes over from an owner that stopped heartbeating.
    /// </summary>
    public async Task<bool> TryClaimAsync(ConsumeContext context, RunInvocation invocation)
    {
        var me = options.Value.EffectiveInstanceId;
        var attempt = Math.Max(1, invocation.Attempt);
        var deadline = time.GetUtcNow() + options.Value.StaleAfter + options.Value.HeartbeatInterval * 2;
        string? takeOverFrom = null;
        var pause = TimeSpan.FromSeconds(1);
        while (true)
        {
            ClaimInvocationReply reply;
            try
            {
                reply = (await client.GetResponse<ClaimInvocationReply>(new ClaimInvocation
                {
                    InvocationId = invocation.InvocationId,
                    Attempt = attempt,
                    Instance = me,
                    InstanceAddress = new Uri($"queue:{options.Value.InstanceQueue}"),
                    TakeOverFrom = takeOverFrom,
                    AskedAgain = invocation.ParentAttempt > 1 && attempt == 1 && !context.ReceiveContext.Redelivered,
                    Invocation = invocation,
                }, context.CancellationToken).ConfigureAwait(false)).Message;
            }
            catch (RequestTimeoutException ex)
            {
                // A saga backlog or a database outage: the claim is asked again, for as long as the delivery lives. A
                // claim never moves a valid invocation to the error queue.
                InvocationLog.ClaimUnanswered(logger, invocation.InvocationId, attempt, ex.Message, (long)pause.TotalMilliseconds);
                await Task.Delay(pause, time, context.CancellationToken).ConfigureAwait(false);
                pause = pause * 2 < MaxClaimPause ? pause * 2 : MaxClaimPause;
                deadline = time.GetUtcNow() + options.Value.StaleAfter + options.Value.HeartbeatInterval * 2;
                continue;
            }
            if (reply.Granted)
                return true;

            var ownerAlive = reply.Owner is { } owner && owner != me && !registry.IsStale(owner);
            if (InvocationTransitions.FinalStatuses.Contains(reply.Status) || reply.Attempt > attempt || reply.Owner is null || time.GetUtcNow() > deadline)
            {
                ClaimLog.Refused(logger, invocation.InvocationId, attempt, reply.Status, reply.Owner ?? "-", reply.Attempt);
                return false; // finished, superseded, or owned by someone alive: this delivery is not needed
            }
            if (!ownerAlive)
            {
                takeOverFrom = reply.Owner;
                continue;
            }
            await Task.Delay(TimeSpan.FromSeconds(1), time, context.CancellationToken).ConfigureAwait(false);
        }
    }
}

static partial class ClaimLog
{
    [LoggerMessage(EventId = 14, EventName = "ClaimRefused", Level = LogLevel.Warning,
        Message = "Invocation {InvocationId} attempt {Attempt} not started: the saga has it {Status}, owned by {Owner} at attempt {OwnerAttempt}")]
    public static partial void Refused(ILogger logger, Guid invocationId, int attempt, string status, string owner, int ownerAttempt);
}
