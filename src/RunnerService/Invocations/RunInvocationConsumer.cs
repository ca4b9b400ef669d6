using MassTransit;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using RunnerService.Contracts;
using RunnerService.Hosting;
using RunnerService.Processes;
using RunnerService.Slots;
using RunnerService.Telemetry;

namespace RunnerService.Invocations;

/// <summary>
/// Takes one <see cref="RunInvocation"/> when a slot is free, runs it in a fresh worker process, and acks the
/// message only when the invocation has ended (or paused, once the saga owns it), so a crash redelivers it.
/// </summary>
sealed class RunInvocationConsumer(
    SlotPool slots,
    InvocationExecutor executor,
    WorkerSupervisor supervisor,
    ShutdownCoordinator shutdown,
    OwnershipClaims claims,
    Recovery.BrokerContact contact,
    IBus bus,
    IOptions<RunnerOptions> options,
    ILogger<RunInvocationConsumer> logger) : IConsumer<RunInvocation>
{
    public async Task Consume(ConsumeContext<RunInvocation> context)
    {
        var invocation = context.Message;
        if (ReplySender.AddressOf(invocation, context.ReceiveContext, context.ResponseAddress) is { } replyTo && replyTo != invocation.ReplyTo)
            invocation = invocation with { ReplyTo = replyTo };
        // The endpoint's error pipe publishes the InvalidInvocation completion and moves the message to the error
        // queue with the reason (RejectInvalidInvocationFilter), as for a body that does not read as a RunInvocation.
        if (InvocationValidator.Validate(invocation, options.Value) is { } invalid)
            throw new InvalidInvocationException(invalid);

        if (shutdown.IsStopping)
        {
            // Stop taking work. A first delivery that never ran goes back as a first delivery: published again and this
            // one acknowledged, so the replica that takes it does not hold it as a redelivery that might still run
            // somewhere (OwnershipClaims). A redelivery, or a copy that cannot be published, is held until the bus
            // stops, which returns it to the queue unacknowledged.
            if (!context.ReceiveContext.Redelivered && await HandBackAsync(invocation).ConfigureAwait(false))
                return;
            InvocationLog.ParkedDuringShutdown(logger, invocation.InvocationId);
            await Task.Delay(Timeout.Infinite, context.CancellationToken).ConfigureAwait(false);
        }
        // Cut off from the broker for half the stale limit (publishes unconfirmed): peers may soon presume this replica
        // gone. Take no new work until contact is back; the delivery waits (or goes back to the queue with its channel).
        while (contact.IntakeStopped && !shutdown.IsStopping)
        {
            InvocationLog.IntakeStopped(logger, invocation.InvocationId, contact.Silence);
            await Task.Delay(TimeSpan.FromSeconds(1), context.CancellationToken).ConfigureAwait(false);
        }
        switch (await ClaimHereAsync(invocation, context.CancellationToken).ConfigureAwait(false))
        {
            case LocalClaim.Held:
                // A second delivery of what this replica already handles (a duplicate publish, or a redelivery after the
                // broker's consumer timeout): acknowledged without a second run; the first one publishes the completion.
                var state = supervisor.TryGet(invocation.InvocationId, out var existing) ? existing.State : WorkerState.Running;
                InvocationLog.DuplicateDelivery(logger, invocation.InvocationId, state, existing?.Pid ?? 0);
                return;
            case LocalClaim.FinishedHere:
                // A redelivery after the first delivery was lost with its channel, or a second publish of the same
                // invocation (a publish retried after a lost confirm): the run has ended here, its events are out.
                InvocationLog.AlreadyFinishedHere(logger, invocation.InvocationId, Math.Max(1, invocation.Attempt));
                return;
        }
        // From here this delivery holds the local claim of (id, attempt). LiveAsync is its life on this replica, through
        // the saga's claim, a slot and the run to its end, and the one place that releases the claim unstarted.
        using var scope = logger.BeginScope(new Dictionary<string, object> { ["InvocationId"] = invocation.InvocationId, ["TaskName"] = invocation.TaskName });
        var workerStarted = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var life = LiveAsync(context, invocation, workerStarted);
        if (await Task.WhenAny(workerStarted.Task, life).ConfigureAwait(false) == life)
        {
            await life.ConfigureAwait(false); // ended before a worker ran: refused by the saga, or cancelled
            return;
        }
        // Hold the delivery while the invocation runs (a crash then redelivers it), but not past the broker's consumer
        // timeout: after DeliveryHoldLimit the delivery is acknowledged and the saga (with the recovery check) is the
        // invocation's durable owner, exactly as for a paused one. A lost channel ends the hold too.
        if (await DeliveryHold.HoldAsync(life, options.Value.DeliveryHoldLimit, context.CancellationToken, logger, invocation.InvocationId).ConfigureAwait(false))
            return;
        executor.Observe(life); // it runs on in the background and releases the claim when it ends
        await executor.TrackReleasedRunAsync(invocation.InvocationId, context.CancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// The life of a locally claimed delivery: the saga's claim when one is needed, room and a slot, then the run
    /// (<see cref="InvocationExecutor.RunNewAsync"/>, which gives the slot back itself). Signals
    /// <paramref name="workerStarted"/> once the run is under way; releases an unstarted local claim when it ends,
    /// however (a started worker's entry ends with its session, <see cref="WorkerSupervisor.Remove"/>).
    /// </summary>
    async Task LiveAsync(ConsumeContext<RunInvocation> context, RunInvocation invocation, TaskCompletionSource workerStarted)
    {
        var attempt = Math.Max(1, invocation.Attempt);
        try
        {
            // A redelivery, a retry, a reroute, or a child asked for again by its parent's next attempt or re-run may meet another
            // run of the same invocation (live or finished): the saga decides.
            if (OwnershipClaims.Needed(context, invocation) && !await claims.TryClaimAsync(context, invocation).ConfigureAwait(false))
                return;
            var queuedSince = invocation.SubmittedAt?.UtcDateTime ?? context.SentTime ?? DateTime.UtcNow;
            await supervisor.WaitForRoomAsync(context.CancellationToken).ConfigureAwait(false);
            var lease = await slots.AcquireAsync(SlotPriority.Normal, context.CancellationToken).ConfigureAwait(false);
            var running = executor.RunNewAsync(context, invocation, attempt, queuedSince, lease);
            workerStarted.TrySetResult();
            try
            {
                await running.ConfigureAwait(false);
            }
            catch (Exception ex)
            {
                InvocationLog.RunFailed(logger, invocation.InvocationId, ex);
                throw;
            }
        }
        finally
        {
            supervisor.ReleaseClaim(invocation.InvocationId, attempt);
        }
    }

    async Task<bool> HandBackAsync(RunInvocation invocation)
    {
        try
        {
            using var limit = new CancellationTokenSource(TimeSpan.FromSeconds(5));
            await bus.Publish(invocation, limit.Token).WaitAsync(TimeSpan.FromSeconds(6)).ConfigureAwait(false);
            InvocationLog.HandedBack(logger, invocation.InvocationId);
            return true;
        }
        catch (Exception)
        {
            return false;
        }
    }

    /// <summary>
    /// Claims the invocation's attempt on this replica (<see cref="AttemptTable{TSession}"/>, keyed by id, holding one
    /// attempt at a time). A newer attempt of something this replica still runs or holds paused means the saga has moved
    /// on (a reroute while this replica was presumed gone), so the old attempt's worker is killed and the newer one may go
    /// ahead (through the saga's claim). <see cref="LocalClaim.Held"/> for a duplicate of the attempt held here, or of an
    /// older one; <see cref="LocalClaim.FinishedHere"/> for an attempt that ran to its end here. A copy that meets a claim
    /// not yet started waits for it to start or to give up.
    /// </summary>
    async Task<LocalClaim> ClaimHereAsync(RunInvocation invocation, CancellationToken cancellationToken)
    {
        var attempt = Math.Max(1, invocation.Attempt);
        for (var tries = 0; ; tries++)
        {
            var claim = supervisor.TryClaim(invocation.InvocationId, attempt, out var heldAttempt, out var held);
            if (claim != LocalClaim.Held)
                return claim;
            if (held is not null)
            {
                if (held.Attempt >= attempt || tries >= 50)
                    return LocalClaim.Held;
                if (await supervisor.AbandonAsync(invocation.InvocationId, held.Attempt).ConfigureAwait(false))
                    InvocationLog.Abandoned(logger, invocation.InvocationId, held.Attempt, $"attempt {attempt} of the same invocation arrived here: the saga has moved on");
                // The old attempt's driver gives its entry up as it ends.
            }
            else if (heldAttempt > attempt)
            {
                return LocalClaim.Held;
            }
            // Else a delivery of the same attempt, or of an older one, holds the claim here but has not started its
            // worker: it is still asking the saga, or waiting for room or a slot. Wait for it to start (then this is a
            // duplicate) or to give up: a delivery lost with its channel (a broker restart) ends its consume, and this
            // copy, its redelivery, is the only one left. Dropped as a duplicate at once, as before, it left the
            // invocation with nobody to run it (a child that never ran, its parent waiting for ever). Likewise a newer
            // attempt waits for an older attempt's delivery that the saga is about to refuse.
            await Task.Delay(TimeSpan.FromMilliseconds(100), cancellationToken).ConfigureAwait(false);
        }
    }
}
