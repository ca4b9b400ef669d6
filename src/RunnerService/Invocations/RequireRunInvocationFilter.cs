using System.Text.Json;
using MassTransit;
using RunnerService.Contracts;

namespace RunnerService.Invocations;

/// <summary>
/// Every message on the invocation queue must read as a <see cref="RunInvocation"/>: one that does not (another
/// message type, a field of the wrong JSON type) is rejected here like an invalid one, instead of being moved to
/// <c>_skipped</c> in silence or faulting with a bare serializer message.
/// </summary>
sealed class RequireRunInvocationFilter : IFilter<ConsumeContext>
{
    static readonly string RunInvocationUrn = MessageUrn.ForTypeString<RunInvocation>();

    public Task Send(ConsumeContext context, IPipe<ConsumeContext> next)
    {
        if (!context.HasMessageType(typeof(RunInvocation)))
            throw new InvalidInvocationException(
                $"the message type is {string.Join(", ", context.SupportedMessageTypes)}, not {RunInvocationUrn} (or send the RunInvocation object itself with content type {InvocationBody.RawContentType})", unreadable: true);
        bool read;
        try
        {
            read = context.TryGetMessage<RunInvocation>(out _);
        }
        catch (JsonException ex)
        {
            throw new InvalidInvocationException($"the body is not a valid RunInvocation: {InvocationBody.DescribeJsonError(ex)}", unreadable: true);
        }
        if (!read)
            throw new InvalidInvocationException("the body is not a RunInvocation object", unreadable: true);
        return next.Send(context);
    }

    public void Probe(ProbeContext context) => context.CreateFilterScope("requireRunInvocation");
}
