using Microsoft.Extensions.Logging;

namespace RunnerService.Processes;

static partial class WorkerLog
{
    [LoggerMessage(EventId = 100, EventName = "WorkerStderr", Level = LogLevel.Information,
        Message = "[{TaskName} {InvocationId} pid {Pid}] {Line}")]
    public static partial void WorkerStderr(ILogger logger, Guid invocationId, string taskName, int pid, string line);

    [LoggerMessage(EventId = 101, EventName = "KillingOnStop", Level = LogLevel.Warning,
        Message = "Stopping: killing worker pid {Pid} of invocation {InvocationId} ({TaskName}), state {State}")]
    public static partial void KillingOnStop(ILogger logger, int pid, Guid invocationId, string taskName, WorkerState state);

    [LoggerMessage(EventId = 102, EventName = "WarmSpawnFailed", Level = LogLevel.Error,
        Message = "Could not pre-spawn an idle worker for the warm pool")]
    public static partial void WarmSpawnFailed(ILogger logger, Exception exception);

    [LoggerMessage(EventId = 103, EventName = "OpenFileLimit", Level = LogLevel.Information,
        Message = "Open-file limit {Limit}: room for {Workers} live workers (running or paused; three pipes each, 512 descriptors kept free)")]
    public static partial void OpenFileLimit(ILogger logger, ulong limit, ulong workers);
}
