using MassTransit;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using RunnerService.Contracts;
using RunnerService.Hosting;
using RunnerService.Processes;
using RunnerService.Slots;

namespace RunnerService.Invocations;

/// <summary>
/// On this replica's own queue: the saga says everything a paused worker waited for is final. Takes a slot (before
/// any new invocation), writes the results to the worker and lets it run again.
/// </summary>
sealed class ResumeInvocationConsumer(
    SlotPool slots,
    WorkerSupervisor supervisor,
    InvocationExecutor executor,
    IOptions<RunnerOptions> options,
    ILogger<ResumeInvocationConsumer> logger)
    : IConsumer<ResumeInvocation>
{
    public async Task Consume(ConsumeContext<ResumeInvocation> context)
    {
        var message = context.Message;
        if (!supervisor.TryGet(message.InvocationId, out var session) || session.Attempt != message.Attempt)
        {
            InvocationLog.ResumeForUnknownWorker(logger, message.InvocationId, message.Attempt);
            await executor.RecoverLostWorkerAsync(context, message.InvocationId, message.Attempt).ConfigureAwait(false);
            return;
        }
        if (session.State != WorkerState.Paused || (message.WaitSequence != 0 && message.WaitSequence != session.WaitSequence))
        {
            InvocationLog.ResumeForRunningWorker(logger, message.InvocationId, session.State);
            return;
        }
        using var scope = logger.BeginScope(new Dictionary<string, object> { ["InvocationId"] = session.InvocationId, ["TaskName"] = session.Invocation.TaskName });
        var lease = await slots.AcquireAsync(SlotPriority.Resume, context.CancellationToken).ConfigureAwait(false);
        var running = RunAsync(context, session, message, lease);
        // As for a new invocation: the resumed run holds this delivery, within the hold limit and the channel's life.
        await DeliveryHold.HoldAsync(running, options.Value.DeliveryHoldLimit, context.CancellationToken, logger, session.InvocationId).ConfigureAwait(false);
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
        finally
        {
            lease.Dispose();
        }
    }
}
