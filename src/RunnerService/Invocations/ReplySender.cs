using MassTransit;
using MassTransit.Serialization;
using System.Text.Json;
using RunnerService.Contracts;

namespace RunnerService.Invocations;

/// <summary>
/// Sends a completion to the queue its publisher named (<see cref="RunInvocation.ReplyTo"/>), through the default
/// exchange: nothing is declared for it (the queue is the publisher's own), and a reply to a queue that is gone is
/// dropped by the broker rather than left in a queue nobody reads. A MassTransit endpoint address names its queue in its
/// last path segment and gets an envelope, as MassTransit's own responses do; a plain queue name (AMQP
/// <c>reply_to</c>) gets the raw event object (<c>application/json</c>).
/// </summary>
sealed class ReplySender(IBus bus)
{
    // Set on the one send that uses it; the bus's own serializer stays MassTransit's envelope.
    static readonly SystemTextJsonRawMessageSerializer RawJson = new(RawSerializerOptions.Default);
    static readonly string[] EndpointSchemes = ["rabbitmq", "rabbitmqs", "queue"];

    Uri? _defaultExchange;

    /// <summary>Where a completion for <paramref name="invocation"/> goes besides the completion exchange, if anywhere.</summary>
    public static string? AddressOf(RunInvocation invocation, ReceiveContext receive, Uri? responseAddress)
    {
        if (!string.IsNullOrWhiteSpace(invocation.ReplyTo))
            return invocation.ReplyTo;
        if (responseAddress is not null)
            return responseAddress.ToString();
        return AmqpReplyTo(receive);
    }

    /// <summary>The AMQP <c>reply_to</c> property of a delivery, when it has one.</summary>
    public static string? AmqpReplyTo(ReceiveContext receive) =>
        (receive as RabbitMqBasicConsumeContext ?? (receive.TryGetPayload(out RabbitMqBasicConsumeContext? payload) ? payload : null)) is { } rabbit
        && rabbit.Properties.IsReplyToPresent() && !string.IsNullOrWhiteSpace(rabbit.Properties.ReplyTo)
            ? rabbit.Properties.ReplyTo
            : null;

    /// <summary>Why a reply address cannot be used, or null when it can (checked with the rest of the invocation).</summary>
    public static string? Problem(string replyTo)
    {
        if (replyTo.StartsWith("exchange:", StringComparison.OrdinalIgnoreCase) || replyTo.StartsWith("topic:", StringComparison.OrdinalIgnoreCase))
            return $"ReplyTo \"{JsonEncodedText.Encode(replyTo)}\" names an exchange; name a queue (a queue name, queue:NAME or rabbitmq://host/vhost/NAME)";
        var queue = IsEndpointAddress(replyTo, out var address) ? QueueOf(address) : replyTo;
        if (string.IsNullOrWhiteSpace(queue))
            return $"ReplyTo \"{JsonEncodedText.Encode(replyTo)}\" names no queue";
        if (System.Text.Encoding.UTF8.GetByteCount(queue) > 255 || queue.Any(char.IsControl))
            return "ReplyTo is not a queue name (at most 255 bytes of UTF-8, no control characters)";
        return null;
    }

    /// <summary>True for a MassTransit endpoint address; false for a plain queue name.</summary>
    public static bool IsEndpointAddress(string replyTo, out Uri address) =>
        Uri.TryCreate(replyTo, UriKind.Absolute, out address!) && EndpointSchemes.Contains(address.Scheme, StringComparer.OrdinalIgnoreCase);

    public async Task SendAsync<T>(string replyTo, T completed, CancellationToken cancellationToken) where T : class
    {
        var raw = !IsEndpointAddress(replyTo, out var address);
        var queue = raw ? replyTo : QueueOf(address);
        // MassTransit sends to this exchange name through the default exchange, with the routing key as the queue name.
        _defaultExchange ??= new Uri(bus.Address, "amq.rabbitmq.reply-to");
        var endpoint = await bus.GetSendEndpoint(_defaultExchange).ConfigureAwait(false);
        await endpoint.Send(completed, context =>
        {
            context.SetRoutingKey(queue);
            if (raw)
                context.Serializer = RawJson;
        }, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>The queue of a MassTransit endpoint address: <c>queue:name</c>, or the last segment of <c>rabbitmq://host/vhost/name?…</c>.</summary>
    public static string QueueOf(Uri address) =>
        address.Scheme is "queue"
            ? address.AbsolutePath.Trim('/')
            : Uri.UnescapeDataString(address.AbsolutePath.TrimEnd('/')[(address.AbsolutePath.TrimEnd('/').LastIndexOf('/') + 1)..]);
}
