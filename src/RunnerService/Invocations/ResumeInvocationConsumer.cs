using MassTransit;
using Microsoft.Extensions.Logging;
using RunnerService.Contracts;
using RunnerService.Processes;
using RunnerService.Slots;

namespace RunnerService.Invocations;

/// <summary>
/// On this replica's own queue: the saga says everything a paused worker waited for is final. Takes a slot (before
/// any new invocation), writes the results to the worker and lets it run again.
/// </summary>
sealed class ResumeInvocationConsumer(SlotPool slots, WorkerSupervisor supervisor, InvocationExecutor executor, ILogger<ResumeInvocationConsumer> logger)
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
        using var lease = await slots.AcquireAsync(SlotPriority.Resume, context.CancellationToken).ConfigureAwait(false);
        await executor.ResumeAsync(context, session, message.Results, lease, context.CancellationToken).ConfigureAwait(false);
    }
}
