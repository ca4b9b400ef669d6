using MassTransit;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using RunnerService.Contracts;
using RunnerService.Hosting;
using RunnerService.Recovery;
using RunnerService.Saga;
using RunnerService.Saga.Messages;
using RunnerService.Saga.Persistence;

namespace RunnerService.Invocations;

/// <summary>
/// Asks the saga for ownership before a redelivered or repeated attempt, or any sub-invocation, starts, so no
/// invocation runs twice at the same time. First deliveries of root invocations skip it: they are the hot path.
/// </summary>
sealed class OwnershipClaims(
    IRequestClient<ClaimInvocation> client,
    RunnerRegistry registry,
    Saga.Persistence.ISagaStore sagas,
    IOptions<RunnerOptions> options,
    TimeProvider time,
    ILogger<OwnershipClaims> logger)
{
    static readonly TimeSpan MaxClaimPause = TimeSpan.FromSeconds(30);

    /// <summary>
    /// Whether a delivery must claim through the saga before it runs: a redelivery, a retry, a reroute, or a child
    /// asked for again by its parent's later attempt or re-run may meet another run of the same invocation (live or
    /// finished). So may the first delivery of any sub-invocation: its parent's publish may have gone out twice (a
    /// publish retried after a lost confirm), and a parent that runs again asks for the same child id, perhaps while
    /// the first copy of its message is still queued or running on another replica. Only first deliveries of root
    /// invocations skip the claim: a root's id is its publisher's, and they are the hot path (one saga round trip
    /// per invocation saved).
    /// </summary>
    public static bool Needed(ConsumeContext context, RunInvocation invocation) =>
        context.ReceiveContext.Redelivered || invocation.Attempt > 1 || invocation.ParentInvocationId is not null
        || invocation.ParentAttempt > 1 || invocation.ParentRerun == true;

    /// <summary>
    /// True when this replica may run the attempt. While another replica that still heartbeats owns it, waits (up to
    /// the stale limit) in case it is gone; takes over from an owner that stopped heartbeating.
    /// </summary>
    public async Task<bool> TryClaimAsync(ConsumeContext context, RunInvocation invocation)
    {
        var me = options.Value.EffectiveInstanceId;
        var attempt = Math.Max(1, invocation.Attempt);
        var askedAgainClaim = (invocation.ParentAttempt > 1 || invocation.ParentRerun == true) && attempt == 1 && !context.ReceiveContext.Redelivered;
        if (context.ReceiveContext.Redelivered)
            await HoldWhileUnownedAsync(invocation.InvocationId, attempt, context.CancellationToken).ConfigureAwait(false);
        var deadline = time.GetUtcNow() + options.Value.StaleAfter + options.Value.HeartbeatInterval * 2;
        string? takeOverFrom = null;
        var pause = TimeSpan.FromSeconds(1);
        while (true)
        {
            ClaimInvocationReply reply;
            try
            {
                // The request's own send may hang on a connection that died unnoticed (a confirm that never comes), and
                // then it ignores the token until its 30 s timeout. The consume must return as soon as its delivery is
                // cancelled: MassTransit waits for it before it rebuilds the connection, and every publish of this
                // replica waits with it (seen in CI: a claim held the consumer's stop for 30 s after a broker restart,
                // and the replica was left on the dead connection).
                reply = (await client.GetResponse<ClaimInvocationReply>(new ClaimInvocation
                {
                    InvocationId = invocation.InvocationId,
                    Attempt = attempt,
                    Instance = me,
                    InstanceAddress = options.Value.InstanceAddress,
                    TakeOverFrom = takeOverFrom,
                    AskedAgain = askedAgainClaim,
                    Invocation = invocation,
                }, context.CancellationToken).WaitAsync(context.CancellationToken).ConfigureAwait(false)).Message;
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

            var ownerAlive = reply.Owner is { } owner && owner != me && !registry.IsGone(owner);
            if (InvocationTransitions.FinalStatuses.Contains(reply.Status) || reply.Attempt > attempt || reply.Owner is null || time.GetUtcNow() > deadline)
            {
                ClaimLog.Refused(logger, invocation.InvocationId, attempt, reply.Status, reply.Owner ?? "-", reply.Attempt);
                return false; // finished, superseded, or owned by someone alive: this delivery is not needed
            }
            if ((askedAgainClaim || !context.ReceiveContext.Redelivered) && ownerAlive)
            {
                // A second copy (a child asked for again, a publish that went out twice) of what a live replica holds:
                // left to it, at once. The saga records that owner, so its recovery runs the invocation again should the
                // owner die; waiting for it to go stale would hold one of the consumer's deliveries for the stale limit.
                ClaimLog.Refused(logger, invocation.InvocationId, attempt, reply.Status, reply.Owner ?? "-", reply.Attempt);
                return false;
            }
            if (!ownerAlive)
            {
                takeOverFrom = reply.Owner;
                continue;
            }
            await Task.Delay(TimeSpan.FromSeconds(1), time, context.CancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>
    /// A redelivery of a run the saga has no owner for (never tracked: younger than <c>TrackAfter</c> and not waiting)
    /// may still be running on the replica whose delivery was lost: a partition, a broker restart. Nothing records that
    /// replica, so the claim would be granted at once and both would run. Instead the delivery is held (no worker slot,
    /// but one of the consumer's concurrent deliveries) for as long as peers wait before they presume a silent replica gone (<c>StaleAfter</c> plus one heartbeat
    /// interval). Cut off, that replica fences itself (kills the run) after three quarters of <c>StaleAfter</c>; in
    /// contact, it tracks the run or completes it, and the hold ends as soon as the saga shows an owner or an end.
    /// </summary>
    async Task HoldWhileUnownedAsync(Guid invocationId, int attempt, CancellationToken cancellationToken)
    {
        var until = time.GetUtcNow() + options.Value.StaleAfter + options.Value.HeartbeatInterval;
        var since = time.GetUtcNow();
        var held = false;
        while (time.GetUtcNow() < until && await UnownedAsync(invocationId).ConfigureAwait(false))
        {
            if (!held)
                ClaimLog.HoldingUnowned(logger, invocationId, attempt, until - time.GetUtcNow());
            held = true;
            await Task.Delay(TimeSpan.FromSeconds(1), time, cancellationToken).ConfigureAwait(false);
        }
        if (held)
            ClaimLog.HoldEnded(logger, invocationId, attempt, time.GetUtcNow() - since);
    }

    /// <summary>No saga record, or one that only expects the invocation (a waiter registered for it): nobody owns it.</summary>
    async Task<bool> UnownedAsync(Guid invocationId)
    {
        try
        {
            if (await sagas.ReadStateAsync(invocationId, CancellationToken.None).ConfigureAwait(false) is not { } saga)
                return true;
            return saga.OwnerInstance is null && saga.CurrentState == nameof(InvocationStateMachine.Expected);
        }
        catch (Exception)
        {
            return true; // a store that cannot be read: keep holding (bounded); the claim that follows retries too
        }
    }
}

static partial class ClaimLog
{
    [LoggerMessage(EventId = 14, EventName = "ClaimRefused", Level = LogLevel.Warning,
        Message = "Invocation {InvocationId} attempt {Attempt} not started: the saga has it {Status}, owned by {Owner} at attempt {OwnerAttempt}")]
    public static partial void Refused(ILogger logger, Guid invocationId, int attempt, string status, string owner, int ownerAttempt);

    [LoggerMessage(EventId = 22, EventName = "HoldingUnownedRedelivery", Level = LogLevel.Warning,
        Message = "Invocation {InvocationId} attempt {Attempt} redelivered and owned by nobody in the saga: it may still run where its delivery was lost, so it waits up to {Remaining} before it is claimed here")]
    public static partial void HoldingUnowned(ILogger logger, Guid invocationId, int attempt, TimeSpan remaining);

    [LoggerMessage(EventId = 23, EventName = "UnownedRedeliveryHoldEnded", Level = LogLevel.Information,
        Message = "Invocation {InvocationId} attempt {Attempt}: redelivery held for {Held}; claiming it now")]
    public static partial void HoldEnded(ILogger logger, Guid invocationId, int attempt, TimeSpan held);
}
