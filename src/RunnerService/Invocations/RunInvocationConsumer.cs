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

        using var scope = logger.BeginScope(new Dictionary<string, object> { ["InvocationId"] = invocation.InvocationId, ["TaskName"] = invocation.TaskName });
        var queuedSince = invocation.SubmittedAt?.UtcDateTime ?? context.SentTime ?? DateTime.UtcNow;
        using var lease = await slots.AcquireAsync(SlotPriority.Normal, context.CancellationToken).ConfigureAwait(false);
        await executor.RunNewAsync(context, invocation, attempt: 1, queuedSince, lease, context.CancellationToken).ConfigureAwait(false);
    }
}
