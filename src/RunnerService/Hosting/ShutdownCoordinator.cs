using System.Text;
using MassTransit;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using RunnerService.Invocations;
using RunnerService.Processes;

namespace RunnerService.Hosting;

/// <summary>
/// SIGTERM: stop taking messages, give running invocations <see cref="RunnerOptions.ShutdownGrace"/> to finish, then
/// for each worker left (running or paused): kill it, wait until it is gone, and reroute its invocation unless it
/// completed meanwhile. All of this happens in <see cref="StoppingAsync"/>, which the host runs before any service's
/// StopAsync: the bus can still publish, and the heartbeats (RecoveryService) go on until the last worker is gone, so
/// peers never take a draining replica for a dead one.
/// </summary>
sealed class ShutdownCoordinator(
    WorkerSupervisor supervisor,
    InvocationExecutor executor,
    IBus bus,
    IOptions<RunnerOptions> options,
    TimeProvider time,
    ILogger<ShutdownCoordinator> logger) : IHostedLifecycleService
{
    volatile bool _stopping;

    public bool IsStopping => _stopping;

    public Task StartAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public Task StartingAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public Task StartedAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public Task StoppedAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public async Task StoppingAsync(CancellationToken cancellationToken)
    {
        _stopping = true;
        var grace = options.Value.ShutdownGrace;
        var deadline = time.GetUtcNow() + grace;
        while (supervisor.Sessions.Any(s => s.State == WorkerState.Running) && time.GetUtcNow() < deadline && !cancellationToken.IsCancellationRequested)
            await Task.Delay(TimeSpan.FromMilliseconds(50), time, CancellationToken.None).ConfigureAwait(false);

        var left = supervisor.Sessions.ToArray();
        if (left.Length == 0)
        {
            ShutdownLog.NothingLeft(logger);
            await executor.DrainBackgroundAsync(BackgroundBudget).ConfigureAwait(false);
            return;
        }
        ShutdownLog.Summary(logger, left.Length, Describe(left));
        // Stop every worker left at once (SIGTERM to its group, SIGKILL after the kill grace; one that completed
        // meanwhile is left to its own driver), wait until all are gone, then reroute each: its invocation must never
        // run twice at the same time.
        var aborted = left.Where(s => s.TryAbort()).ToArray();
        await Task.WhenAll(aborted.Select(s => s.Exited)).ConfigureAwait(false);
        // The reroutes get a bounded time together: with the broker unreachable, stopping must not hang. What is not
        // rerouted is not lost: a running invocation's delivery was never acknowledged and returns to the queue; a
        // paused one is owned by the saga, and another replica's recovery check reroutes it once this one is stale.
        using var budget = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        budget.CancelAfter(RerouteBudget);
        foreach (var session in aborted)
        {
            try
            {
                await executor.RerouteAsync(bus, session.Invocation, session.Attempt, budget.Token).ConfigureAwait(false);
                ShutdownLog.Rerouted(logger, session.InvocationId, session.Pid, session.Attempt + 1);
            }
            catch (Exception ex)
            {
                ShutdownLog.RerouteFailed(logger, session.InvocationId, session.Pid, session.State, ex.Message);
            }
            finally
            {
                session.Rerouted.TrySetResult();
                if (session.State == WorkerState.Paused)
                    supervisor.Remove(session); // no driver is waiting on a paused session
            }
        }
        // The drivers of the runs taken away (and work that went on without its delivery) end now; their last
        // publishes go out while the bus is still up.
        await executor.DrainBackgroundAsync(BackgroundBudget).ConfigureAwait(false);
    }

    static readonly TimeSpan RerouteBudget = TimeSpan.FromSeconds(15);

    /// <summary>How long the drivers of the runs taken away get to finish (their last publishes) before the bus stops.</summary>
    static readonly TimeSpan BackgroundBudget = TimeSpan.FromSeconds(10);

    static string Describe(IEnumerable<WorkerSession> sessions)
    {
        var text = new StringBuilder();
        foreach (var s in sessions)
        {
            var alive = s.Exited.IsCompleted ? "dead" : "alive";
            text.Append($"\n  pid {s.Pid} {alive} {s.State.ToString().ToLowerInvariant()} invocation {s.InvocationId} ({s.Invocation.TaskName}, attempt {s.Attempt})");
            if (s.WaitingFor.Count > 0)
                text.Append($" waits for {string.Join(", ", s.WaitingFor)}");
        }
        return text.Length == 0 ? " none" : text.ToString();
    }
}

static partial class ShutdownLog
{
    [LoggerMessage(EventId = 200, EventName = "ShutdownSummary", Level = LogLevel.Warning,
        Message = "Stopping with {Count} worker(s) left; they are killed and rerouted:{Workers}")]
    public static partial void Summary(ILogger logger, int count, string workers);

    [LoggerMessage(EventId = 201, EventName = "Rerouted", Level = LogLevel.Warning,
        Message = "Invocation {InvocationId} (pid {Pid} killed and gone) rerouted as attempt {Attempt}")]
    public static partial void Rerouted(ILogger logger, Guid invocationId, int pid, int attempt);

    [LoggerMessage(EventId = 203, EventName = "RerouteFailed", Level = LogLevel.Error,
        Message = "Invocation {InvocationId} (pid {Pid} killed and gone, was {State}) could not be rerouted ({Reason}); a running one returns to the queue with its unacknowledged delivery, a paused one is recovered by another replica")]
    public static partial void RerouteFailed(ILogger logger, Guid invocationId, int pid, WorkerState state, string reason);

    [LoggerMessage(EventId = 202, EventName = "ShutdownClean", Level = LogLevel.Information,
        Message = "Stopping: no worker left to kill or reroute")]
    public static partial void NothingLeft(ILogger logger);
}
