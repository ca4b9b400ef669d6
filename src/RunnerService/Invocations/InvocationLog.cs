using Microsoft.Extensions.Logging;
using RunnerService.Contracts;

namespace RunnerService.Invocations;

static partial class InvocationLog
{
    [LoggerMessage(EventId = 1, EventName = "InvocationRejected", Level = LogLevel.Warning,
        Message = "Invocation {InvocationId} rejected: {Reason}")]
    public static partial void Rejected(ILogger logger, Guid invocationId, string reason);

    [LoggerMessage(EventId = 2, EventName = "InvocationStarted", Level = LogLevel.Debug,
        Message = "Invocation {InvocationId} ({TaskName}) started in pid {Pid}, attempt {Attempt}")]
    public static partial void Started(ILogger logger, Guid invocationId, string taskName, int pid, int attempt);

    [LoggerMessage(EventId = 3, EventName = "InvocationCompleted", Level = LogLevel.Information,
        Message = "Invocation {InvocationId} ({TaskName}) {Status} in {RunMs} ms{ErrorText}")]
    public static partial void Completed(ILogger logger, Guid invocationId, string taskName, InvocationStatus status, long runMs, string errorText);

    [LoggerMessage(EventId = 4, EventName = "SpawnFailed", Level = LogLevel.Error,
        Message = "Could not start the worker for invocation {InvocationId}")]
    public static partial void SpawnFailed(ILogger logger, Guid invocationId, Exception exception);

    [LoggerMessage(EventId = 5, EventName = "InvocationPaused", Level = LogLevel.Debug,
        Message = "Invocation {InvocationId} pid {Pid} paused, waiting for {Count} invocation(s)")]
    public static partial void Paused(ILogger logger, Guid invocationId, int pid, int count);

    [LoggerMessage(EventId = 7, EventName = "RunnerFault", Level = LogLevel.Error,
        Message = "Invocation {InvocationId}: the runner failed while driving its worker")]
    public static partial void RunnerFault(ILogger logger, Guid invocationId, Exception exception);

    [LoggerMessage(EventId = 8, EventName = "ResumeForUnknownWorker", Level = LogLevel.Warning,
        Message = "Resume for invocation {InvocationId} attempt {Attempt}, but this replica holds no such paused worker")]
    public static partial void ResumeForUnknownWorker(ILogger logger, Guid invocationId, int attempt);

    [LoggerMessage(EventId = 40, EventName = "ResumeAfterEnd", Level = LogLevel.Information,
        Message = "Resume for invocation {InvocationId} attempt {Attempt}, which has ended on this replica: a copy of a resume already applied; ignored")]
    public static partial void ResumeAfterEnd(ILogger logger, Guid invocationId, int attempt);

    [LoggerMessage(EventId = 9, EventName = "ResumeForRunningWorker", Level = LogLevel.Warning,
        Message = "Resume for invocation {InvocationId} ignored: its worker is {State}, not paused")]
    public static partial void ResumeForRunningWorker(ILogger logger, Guid invocationId, Processes.WorkerState state);

    [LoggerMessage(EventId = 10, EventName = "InvocationResumed", Level = LogLevel.Debug,
        Message = "Invocation {InvocationId} pid {Pid} resumed after {PausedMs} ms")]
    public static partial void Resumed(ILogger logger, Guid invocationId, int pid, long pausedMs);

    [LoggerMessage(EventId = 11, EventName = "InvocationRetrying", Level = LogLevel.Warning,
        Message = "Invocation {InvocationId} attempt {Attempt} failed ({Error}); next attempt in {DelayMs} ms")]
    public static partial void Retrying(ILogger logger, Guid invocationId, int attempt, string error, long delayMs);

    [LoggerMessage(EventId = 12, EventName = "DuplicateDelivery", Level = LogLevel.Warning,
        Message = "Invocation {InvocationId} is already {State} on this replica (pid {Pid}); the duplicate delivery is acknowledged without a second run")]
    public static partial void DuplicateDelivery(ILogger logger, Guid invocationId, Processes.WorkerState state, int pid);

    [LoggerMessage(EventId = 13, EventName = "ParkedDuringShutdown", Level = LogLevel.Debug,
        Message = "Invocation {InvocationId} arrived while stopping; it stays unacknowledged and returns to the queue")]
    public static partial void ParkedDuringShutdown(ILogger logger, Guid invocationId);

    [LoggerMessage(EventId = 15, EventName = "CompletionPublishFailed", Level = LogLevel.Warning,
        Message = "Publishing {MessageType} of invocation {InvocationId} failed ({Reason}); trying again")]
    public static partial void CompletionPublishFailed(ILogger logger, Guid invocationId, string messageType, string reason);

    [LoggerMessage(EventId = 35, EventName = "Cancelling", Level = LogLevel.Information,
        Message = "Invocation {InvocationId} attempt {Attempt} ({State}, pid {Pid}) is cancelled: {Reason}")]
    public static partial void Cancelling(ILogger logger, Guid invocationId, int attempt, Processes.WorkerState state, int pid, string reason);

    [LoggerMessage(EventId = 36, EventName = "CancelledBeforeRun", Level = LogLevel.Information,
        Message = "Invocation {InvocationId} attempt {Attempt} was cancelled before it ran: {Reason}")]
    public static partial void CancelledBeforeRun(ILogger logger, Guid invocationId, int attempt, string reason);

    [LoggerMessage(EventId = 37, EventName = "CancelCheckFailed", Level = LogLevel.Warning,
        Message = "Invocation {InvocationId}: the saga store could not be read for a cancel ({Reason}); it runs, and a cancel reaches it once the saga hears of it")]
    public static partial void CancelCheckFailed(ILogger logger, Guid invocationId, string reason);

    [LoggerMessage(EventId = 34, EventName = "ReplyFailed", Level = LogLevel.Error,
        Message = "The completion of invocation {InvocationId} could not be sent to its reply address {ReplyTo} ({Reason}); it is on the completion exchange")]
    public static partial void ReplyFailed(ILogger logger, Guid invocationId, string replyTo, string reason);

    [LoggerMessage(EventId = 16, EventName = "DeliveryHandedOff", Level = LogLevel.Information,
        Message = "Invocation {InvocationId} still runs after {HoldLimit}: its delivery is acknowledged (the broker's consumer timeout must not fire); the saga owns it from here")]
    public static partial void HandedOff(ILogger logger, Guid invocationId, TimeSpan holdLimit);

    [LoggerMessage(EventId = 18, EventName = "DeliveryLost", Level = LogLevel.Warning,
        Message = "Invocation {InvocationId}: its delivery was cancelled (the broker connection was lost); the run goes on and a redelivery will be recognised")]
    public static partial void DeliveryLost(ILogger logger, Guid invocationId);

    [LoggerMessage(EventId = 19, EventName = "AlreadyFinishedHere", Level = LogLevel.Information,
        Message = "Invocation {InvocationId} attempt {Attempt} already ran to its end on this replica; the redelivery is acknowledged without a second run")]
    public static partial void AlreadyFinishedHere(ILogger logger, Guid invocationId, int attempt);

    [LoggerMessage(EventId = 20, EventName = "PublishGaveUp", Level = LogLevel.Critical,
        Message = "Publishing {MessageType} of invocation {InvocationId} failed for {Patience}; giving up")]
    public static partial void PublishGaveUp(ILogger logger, Guid invocationId, string messageType, TimeSpan patience);

    [LoggerMessage(EventId = 21, EventName = "SpawnDeferred", Level = LogLevel.Warning,
        Message = "Invocation {InvocationId}: the worker could not be started ({Reason}); trying again")]
    public static partial void SpawnDeferred(ILogger logger, Guid invocationId, string reason);

    [LoggerMessage(EventId = 17, EventName = "RunFailed", Level = LogLevel.Error,
        Message = "Invocation {InvocationId}: the run failed in the runner")]
    public static partial void RunFailed(ILogger logger, Guid invocationId, Exception exception);

    [LoggerMessage(EventId = 33, EventName = "IntakeStopped", Level = LogLevel.Warning,
        Message = "Invocation {InvocationId} waits: no broker contact for {Silence}, this replica takes no new work until it is back")]
    public static partial void IntakeStopped(ILogger logger, Guid invocationId, TimeSpan silence);

    [LoggerMessage(EventId = 32, EventName = "BackgroundFailed", Level = LogLevel.Error,
        Message = "Work that went on without its delivery failed")]
    public static partial void BackgroundFailed(ILogger logger, Exception exception);

    [LoggerMessage(EventId = 30, EventName = "AttemptAbandoned", Level = LogLevel.Warning,
        Message = "Invocation {InvocationId} attempt {Attempt}: worker killed, nothing rerouted ({Reason})")]
    public static partial void Abandoned(ILogger logger, Guid invocationId, int attempt, string reason);

    [LoggerMessage(EventId = 31, EventName = "ClaimUnanswered", Level = LogLevel.Warning,
        Message = "Invocation {InvocationId} attempt {Attempt}: the saga did not answer the ownership claim in time ({Reason}); asking again in {DelayMs} ms")]
    public static partial void ClaimUnanswered(ILogger logger, Guid invocationId, int attempt, string reason, long delayMs);

    [LoggerMessage(EventId = 38, EventName = "CompletionNotRepeated", Level = LogLevel.Warning,
        Message = "Invocation {InvocationId} attempt {Attempt}: the completion is not published again, the saga has it {State} at attempt {SagaAttempt} already")]
    public static partial void CompletionNotRepeated(ILogger logger, Guid invocationId, int attempt, string state, int sagaAttempt);

    [LoggerMessage(EventId = 39, EventName = "HandedBackDuringShutdown", Level = LogLevel.Debug,
        Message = "Invocation {InvocationId} arrived while stopping; published again for another replica and this delivery acknowledged")]
    public static partial void HandedBack(ILogger logger, Guid invocationId);
}
