using MassTransit;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using RunnerService.Contracts;
using RunnerService.Hosting;
using RunnerService.Processes;
using RunnerService.Slots;

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
    IOptions<RunnerOptions> options,
    ILogger<RunInvocationConsumer> logger) : IConsumer<RunInvocation>
{
    public async Task Consume(ConsumeContext<RunInvocation> context)
    {
        var invocation = context.Message;
        var invalid = InvocationValidator.Validate(invocation, options.Value);
        if (invalid is not null)
        {
            InvocationLog.Rejected(logger, invocation.InvocationId, invalid);
            if (invocation.InvocationId != Guid.Empty)
                await executor.PublishRejectedAsync(context, invalid).ConfigureAwait(false);
            // Moves the message to the error queue with the reason in its fault headers.
            throw new InvalidInvocationException(invalid);
        }

        if (shutdown.IsStopping)
        {
            // Stop taking work: hold the delivery until the bus stops, which returns it to the queue unacknowledged.
            InvocationLog.ParkedDuringShutdown(logger, invocation.InvocationId);
            await Task.Delay(Timeout.Infinite, context.CancellationToken).ConfigureAwait(false);
        }
        if (!supervisor.TryClaim(invocation.InvocationId))
        {
            // A second delivery of what this replica already handles (a duplicate publish, or a redelivery after the
            // broker's consumer timeout): acknowledged without a second run; the first one publishes the completion.
            var state = supervisor.TryGet(invocation.InvocationId, out var existing) ? existing.State : WorkerState.Running;
            InvocationLog.DuplicateDelivery(logger, invocation.InvocationId, state, existing?.Pid ?? 0);
            return;
        }
        try
        {
            using var scope = logger.BeginScope(new Dictionary<string, object> { ["InvocationId"] = invocation.InvocationId, ["TaskName"] = invocation.TaskName });
            var queuedSince = invocation.SubmittedAt?.UtcDateTime ?? context.SentTime ?? DateTime.UtcNow;
            using var lease = await slots.AcquireAsync(SlotPriority.Normal, context.CancellationToken).ConfigureAwait(false);
            await executor.RunNewAsync(context, invocation, Math.Max(1, invocation.Attempt), queuedSince, lease, context.CancellationToken).ConfigureAwait(false);
        }
        finally
        {
            supervisor.ReleaseClaim(invocation.InvocationId);
        }
    }
}
