using Microsoft.Extensions.Logging;

namespace RunnerService.Processes;

static partial class WorkerLog
{
    [LoggerMessage(EventId = 100, EventName = "WorkerStderr", Level = LogLevel.Information,
        Message = "[{TaskName} {InvocationId} pid {Pid}] {Line}")]
    public static partial void WorkerStderr(ILogger logger, Guid invocationId, string taskName, int pid, string line);

    [LoggerMessage(EventId = 104, EventName = "IdleWorkerStderr", Level = LogLevel.Information,
        Message = "[idle worker pid {Pid}] {Line}")]
    public static partial void IdleWorkerStderr(ILogger logger, int pid, string line);

    [LoggerMessage(EventId = 105, EventName = "NoProcessGroups", Level = LogLevel.Warning,
        Message = "'setsid' was not found: workers share the service's process group, so a worker's own children are not signalled with it (install util-linux)")]
    public static partial void NoProcessGroups(ILogger logger);

    [LoggerMessage(EventId = 106, EventName = "WorkerUser", Level = LogLevel.Information,
        Message = "Workers run as user {User} (uid {Uid}, gid {Gid})")]
    public static partial void WorkerUser(ILogger logger, string user, uint uid, uint gid);

    [LoggerMessage(EventId = 107, EventName = "WorkerCommand", Level = LogLevel.Information,
        Message = "Workers: {Command}")]
    public static partial void WorkerCommand(ILogger logger, string command);

    // One line on purpose: the figures are bench/RESULTS.md's "Native AOT worker by default" section.
    [LoggerMessage(EventId = 108, EventName = "JitStockWorker", Level = LogLevel.Warning,
        Message = "Workers: {Command} is the JIT build of the stock worker, about 8x slower per invocation than its Native AOT build (2 slots, 2 cores: 15 against 122 echo invocations/s; bench/RESULTS.md). Publish the AOT worker with `bash deploy/local/publish-aot-worker.sh` and build the service again; with Runner:WorkerCommand unset it then runs worker/WorkerProcess next to it")]
    public static partial void JitStockWorker(ILogger logger, string command);

    [LoggerMessage(EventId = 101, EventName = "KillingOnStop", Level = LogLevel.Warning,
        Message = "Stopping: killing worker pid {Pid} of invocation {InvocationId} ({TaskName}), state {State}")]
    public static partial void KillingOnStop(ILogger logger, int pid, Guid invocationId, string taskName, WorkerState state);

    [LoggerMessage(EventId = 102, EventName = "WarmSpawnFailed", Level = LogLevel.Error,
        Message = "Could not pre-spawn an idle worker for the warm pool")]
    public static partial void WarmSpawnFailed(ILogger logger, Exception exception);

    [LoggerMessage(EventId = 103, EventName = "OpenFileLimit", Level = LogLevel.Information,
        Message = "Open-file limit {Limit}, {Open} open at start: room for {Workers} workers with open pipes ({PerWorker} descriptors each; a paused worker holds none when {Parking}), {Reserve} descriptors kept free")]
    public static partial void OpenFileLimit(ILogger logger, ulong limit, int open, int workers, int perWorker, string parking, int reserve);
}
