using System.Text.Json;

namespace RunnerService.Contracts;

/// <summary>
/// Asks a RunnerService replica to run one task in a fresh worker process.
/// Published by any service; the exchange name derives from this type, so keep the name stable.
/// </summary>
public record RunInvocation
{
    /// <summary>Identifies the invocation everywhere (events, saga, CLI). Chosen by the publisher.</summary>
    public Guid InvocationId { get; init; }

    /// <summary>Name of the task the worker runs, for example <c>echo</c>.</summary>
    public string TaskName { get; init; } = "";

    /// <summary>The task's arguments as any JSON value; null means no arguments.</summary>
    public JsonElement? Arguments { get; init; }

    /// <summary>Set when a running task started this invocation as a sub-invocation.</summary>
    public Guid? ParentInvocationId { get; init; }

    /// <summary>
    /// Set by the runner on a sub-invocation: the attempt of the parent that asked for it. A parent that runs again
    /// asks for the same children (same ids); from its second attempt on, a child that already exists is not run
    /// again (the runner asks the saga first).
    /// </summary>
    public int? ParentAttempt { get; init; }

    /// <summary>
    /// Set by the runner on a sub-invocation whose parent runs again under the same attempt (its delivery was lost and
    /// redelivered after the first run ended or was killed): the first run may have started the same children, so
    /// each is checked with the saga before it runs, as for a parent's later attempt.
    /// </summary>
    public bool? ParentRerun { get; init; }

    /// <summary>
    /// Run-time limit; null takes the runner's configured default. On the wire either <c>"hh:mm:ss"</c> or a number of
    /// seconds (see <see cref="TimeoutJsonConverter"/>).
    /// </summary>
    [System.Text.Json.Serialization.JsonConverter(typeof(TimeoutJsonConverter))]
    public TimeSpan? Timeout { get; init; }

    /// <summary>
    /// Most attempts for failures the runner treats as retryable (crash, kill, timeout, or a task error marked
    /// retryable); null takes the runner's configured default.
    /// </summary>
    public int? MaxAttempts { get; init; }

    /// <summary>Set by the runner when it runs an invocation again (retry or reroute); publishers leave it at 1.</summary>
    public int Attempt { get; init; } = 1;

    /// <summary>When the publisher submitted it; used for queue-time figures (falls back to the message's sent time).</summary>
    public DateTimeOffset? SubmittedAt { get; init; }

    /// <summary>
    /// Where the completion is sent as well as to the completion exchange: a queue name (sent through the default
    /// exchange, as the raw event object, <c>application/json</c>) or a MassTransit endpoint address (<c>rabbitmq://…</c>,
    /// <c>queue:…</c>; an envelope). Absent, the runner takes the message's MassTransit <c>ResponseAddress</c>, then its
    /// AMQP <c>reply_to</c> property. Kept across retries and reroutes; never inherited by sub-invocations.
    /// </summary>
    public string? ReplyTo { get; init; }
}
