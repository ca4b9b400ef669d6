using System.Runtime.Serialization;
using MassTransit;
using Microsoft.Extensions.Logging;
using RunnerService.Telemetry;

namespace RunnerService.Invocations;

/// <summary>
/// The one place a message the runner cannot run is turned down, in the invocation queue's error pipe: whether it
/// failed <see cref="InvocationValidator"/>, is not a <see cref="Contracts.RunInvocation"/>, or could not be read at
/// all. Whenever an invocation id can be read from the body, its publisher gets a single Failed completion of type
/// <c>InvalidInvocation</c>; the message then goes on to the error queue with the reason in <c>MT-Fault-Message</c>.
/// Other faults pass through untouched.
/// </summary>
sealed class RejectInvalidInvocationFilter(Lazy<InvocationExecutor> executor, ILogger logger) : IFilter<ExceptionReceiveContext>
{
    public async Task Send(ExceptionReceiveContext context, IPipe<ExceptionReceiveContext> next)
    {
        if (Reason(context) is var (reason, kind))
        {
            var body = context.Body.GetBytes();
            var invocation = InvocationBody.TryReadIdentity(body, context.ContentType);
            InvocationLog.Rejected(logger, invocation?.InvocationId ?? Guid.Empty, reason);
            RunnerMetrics.PoisonMessage(kind);
            context.ExceptionHeaders.Set(MessageHeaders.FaultMessage, reason);
            if (invocation is not null)
            {
                // The reply address too may be what is wrong with the message: then only the exchange is told.
                var replyTo = invocation.ReplyTo ?? ReplySender.AmqpReplyTo(context);
                await executor.Value.PublishRejectedAsync(invocation with { ReplyTo = replyTo is not null && ReplySender.Problem(replyTo) is null ? replyTo : null }, reason)
                    .ConfigureAwait(false);
            }
        }
        await next.Send(context).ConfigureAwait(false);
    }

    static (string Reason, string Kind)? Reason(ExceptionReceiveContext context) => context.Exception switch
    {
        InvalidInvocationException invalid => (invalid.Message, invalid.Unreadable ? "unreadable" : "invalid"),
        SerializationException unreadable => (InvocationBody.DescribeUnreadable(context.Body.GetBytes(), context.ContentType, unreadable), "unreadable"),
        _ => null,
    };

    public void Probe(ProbeContext context) => context.CreateFilterScope("rejectInvalidInvocation");
}
