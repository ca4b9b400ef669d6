using MassTransit;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using RunnerService.Contracts;
using RunnerService.Hosting;
using RunnerService.Processes;
using RunnerService.Recovery;
using RunnerService.Saga.Messages;
using RunnerService.Slots;

namespace RunnerService.Invocations;

/// <summary>
/// On this replica's own queue. <see cref="ResumeInvocation"/>: the saga says everything a paused worker waited for
/// is final; claims that wait's resume (a duplicate is a no-op), takes a slot (before any new invocation), and lets
/// the worker run on with the results. <see cref="AbandonAttempt"/>: the saga moved the invocation on to a newer
/// attempt; the worker of the old one is killed. <see cref="InstanceEcho"/>: this replica's own proof that the queue
/// still delivers.
/// </summary>
sealed class ResumeInvocationConsumer(
    SlotPool slots,
    WorkerSupervisor supervisor,
    InvocationExecutor executor,
    BrokerContact contact,
    IOptions<RunnerOptions> options,
    ILogger<ResumeInvocationConsumer> logger)
    : IConsumer<ResumeInvocation>, IConsumer<AbandonAttempt>, IConsumer<InstanceEcho>, IConsumer<CancelAttempt>
{
    public async Task Consume(ConsumeContext<ResumeInvocation> context)
    {
        using var busy = contact.OwnQueueConsume();
        var message = context.Message;
        if (!supervisor.TryGet(message.InvocationId, out var session) || session.Attempt != message.Attempt)
        {
            if (supervisor.FinishedHere(message.InvocationId, message.Attempt))
            {
                // A second copy of a resume this replica applied (a resume sent again, a redelivered wait): the worker
                // ran on and ended, and its completion is on its way to the saga. Asking the saga to run it again
                // would start a second run of something that has finished.
                InvocationLog.ResumeAfterEnd(logger, message.InvocationId, message.Attempt);
                return;
            }
            InvocationLog.ResumeForUnknownWorker(logger, message.InvocationId, message.Attempt);
            await executor.RecoverLostWorkerAsync(context, message.InvocationId, message.Attempt).ConfigureAwait(false);
            return;
        }
        // The claim comes before the slot wait: two copies of one resume must never both drive the worker.
        if (!session.TryClaimResume(message.WaitSequence))
        {
            InvocationLog.ResumeForRunningWorker(logger, message.InvocationId, session.State);
            return;
        }
        using var scope = logger.BeginScope(new Dictionary<string, object> { ["InvocationId"] = session.InvocationId, ["TaskName"] = session.Invocation.TaskName });
        SlotLease lease;
        try
        {
            lease = await slots.AcquireAsync(SlotPriority.Resume, context.CancellationToken).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            session.ReleaseResumeClaim(message.WaitSequence); // the delivery goes back to the queue: its redelivery resumes
            throw;
        }
        var running = RunAsync(context, session, message, lease);
        // As for a new invocation: the resumed run holds this delivery, within the hold limit and the channel's life.
        if (!await DeliveryHold.HoldAsync(running, options.Value.DeliveryHoldLimit, context.CancellationToken, logger, session.InvocationId).ConfigureAwait(false))
            executor.Observe(running);
    }

    async Task RunAsync(ConsumeContext context, WorkerSession session, ResumeInvocation message, SlotLease lease)
    {
        try
        {
            await executor.ResumeAsync(context, session, message.Results, lease).ConfigureAwait(false);
        }
        catch (Exception ex)
        {
            InvocationLog.RunFailed(logger, session.InvocationId, ex);
            throw;
        }
    }

    public Task Consume(ConsumeContext<InstanceEcho> context)
    {
        contact.EchoHeard();
        return Task.CompletedTask;
    }

    public async Task Consume(ConsumeContext<CancelAttempt> context)
    {
        using var busy = contact.OwnQueueConsume();
        await executor.CancelHeldAsync(context.Message.InvocationId, context.Message.Attempt, context.Message.Message).ConfigureAwait(false);
    }

    public async Task Consume(ConsumeContext<AbandonAttempt> context)
    {
        using var busy = contact.OwnQueueConsume();
        var message = context.Message;
        if (await supervisor.AbandonAsync(message.InvocationId, message.Attempt).ConfigureAwait(false))
            InvocationLog.Abandoned(logger, message.InvocationId, message.Attempt, message.Reason);
    }
}
