using System.Diagnostics;
using MassTransit;
using RunnerService.Contracts;

namespace RunnerService.Telemetry;

/// <summary>
/// The service's spans (ActivitySource "RunnerService"): one per run segment of an invocation — from its slot taken to
/// its completion or pause — with a child span for the worker's spawn and events for pause and resume.
/// A run segment is the parent of MassTransit's publish spans of the worker's sub-invocations that happen under it.
/// </summary>
static class RunnerActivitySource
{
    public const string Name = "RunnerService";

    public static readonly ActivitySource Source = new(Name, "1.0");

    /// <summary>Starts the span of a fresh run (or a retry) of <paramref name="invocation"/>, under the consume span.</summary>
    public static Activity? StartRun(ConsumeContext context, RunInvocation invocation, int attempt) =>
        Start(context, $"run {invocation.TaskName}", invocation.InvocationId, invocation.TaskName, attempt, "run");

    /// <summary>Starts the span of the segment after a resume: the paused worker runs on.</summary>
    public static Activity? StartResume(ConsumeContext context, RunInvocation invocation, int attempt, TimeSpan pausedFor)
    {
        var activity = Start(context, $"resume {invocation.TaskName}", invocation.InvocationId, invocation.TaskName, attempt, "resume");
        activity?.AddEvent(new ActivityEvent("resumed", tags: new ActivityTagsCollection { ["runner.paused_for_ms"] = (long)pausedFor.TotalMilliseconds }));
        return activity;
    }

    static Activity? Start(ConsumeContext context, string name, Guid invocationId, string task, int attempt, string operation)
    {
        var activity = Source.StartActivity(name, ActivityKind.Consumer);
        if (activity is null)
            return null;
        // OpenTelemetry messaging semantic conventions (process span of a consumed message).
        activity.SetTag("messaging.system", "rabbitmq");
        activity.SetTag("messaging.operation.type", "process");
        activity.SetTag("messaging.operation.name", operation);
        activity.SetTag("messaging.destination.name", QueueName(context.ReceiveContext.InputAddress));
        activity.SetTag("messaging.message.id", context.MessageId?.ToString());
        activity.SetTag("messaging.message.conversation_id", context.ConversationId?.ToString());
        activity.SetTag("runner.invocation.id", invocationId.ToString());
        activity.SetTag("runner.task", task);
        activity.SetTag("runner.attempt", attempt);
        return activity;
    }

    /// <summary>Marks the current run segment as paused: the worker waits for <paramref name="count"/> invocations.</summary>
    public static void Paused(int count) =>
        Current()?.AddEvent(new ActivityEvent("paused", tags: new ActivityTagsCollection { ["runner.waiting_for"] = count }));

    /// <summary>Records the final status on the current run segment.</summary>
    public static void Completed(InvocationStatus status, string? errorType)
    {
        var activity = Current();
        if (activity is null)
            return;
        activity.SetTag("runner.status", RunnerMetrics.StatusName(status));
        if (status != InvocationStatus.Succeeded)
        {
            activity.SetTag("error.type", errorType ?? RunnerMetrics.StatusName(status));
            activity.SetStatus(ActivityStatusCode.Error, errorType);
        }
    }

    /// <summary>Times a worker spawn: a child span of the run and the spawn-time histogram, both ended by Dispose.</summary>
    public static SpawnScope StartSpawn(RunInvocation invocation)
    {
        var activity = Source.StartActivity("spawn worker");
        activity?.SetTag("runner.invocation.id", invocation.InvocationId.ToString());
        activity?.SetTag("runner.task", invocation.TaskName);
        return new SpawnScope(activity, Stopwatch.GetTimestamp());
    }

    /// <summary>The queue of a RabbitMQ address (rabbitmq://host/vhost/queue): its last path segment.</summary>
    static string? QueueName(Uri? address) => address?.AbsolutePath.TrimEnd('/') is { } path ? path[(path.LastIndexOf('/') + 1)..] : null;

    static Activity? Current() => Activity.Current is { } current && current.Source == Source ? current : null;

    public readonly struct SpawnScope(Activity? activity, long startedAt) : IDisposable
    {
        public void Dispose()
        {
            RunnerMetrics.WorkerSpawned(Stopwatch.GetElapsedTime(startedAt));
            activity?.Dispose();
        }
    }
}
