using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;
using RunnerService.Hosting;
using RunnerService.Processes;
using RunnerService.Saga;
using RunnerService.Saga.Persistence;
using RunnerService.Slots;

namespace RunnerService.Status;

/// <summary>
/// Loopback HTTP: liveness (fails only when its own queue stopped delivering), readiness (bus connected, store
/// answering, own queue delivering; both are health checks, <see cref="RunnerHealthChecks"/>), a status listing of the worker processes, and one invocation's saga record
/// (read-only).
/// </summary>
public static class StatusEndpoints
{
    public static IEndpointRouteBuilder MapRunnerStatus(this IEndpointRouteBuilder endpoints)
    {
        endpoints.MapRunnerHealth();
        endpoints.MapGet("/status", (SlotPool slots, IServiceProvider services, IOptions<RunnerOptions> options, EffectiveSettings settings) =>
        {
            var supervisor = services.GetRequiredService<WorkerSupervisor>();
            var now = DateTimeOffset.UtcNow;
            return Results.Json(new RunnerStatus
            {
                Instance = options.Value.EffectiveInstanceId,
                Pid = Environment.ProcessId,
                SlotsTotal = slots.Total,
                SlotsBusy = slots.Busy,
                PeakSlotsBusy = slots.PeakBusy,
                WorkersAlive = supervisor.Alive,
                PeakWorkersAlive = supervisor.PeakAlive,
                Workers = [.. supervisor.Sessions.Select(s => new WorkerStatus
                {
                    Pid = s.Pid,
                    InvocationId = s.InvocationId,
                    TaskName = s.Invocation.TaskName,
                    State = s.State.ToString().ToLowerInvariant(),
                    Attempt = s.Attempt,
                    AgeSeconds = (now - s.StartedAt).TotalSeconds,
                    WaitingFor = s.WaitingFor,
                })],
                Settings = settings,
            }, StatusJsonContext.Default.RunnerStatus);
        });
        // What the CLI's `status` shows (the same InvocationStatusReport), read from the saga store like the
        // GetInvocationStatus consumer does: no lock, no write. 404 when the saga has no record of the id.
        endpoints.MapGet("/invocations/{id:guid}", async (Guid id, ISagaStore store, CancellationToken cancellationToken) =>
            await store.ReadAsync(id, cancellationToken) is { } stored
                ? Results.Json(InvocationStateMachine.Report(InvocationSagaRepositoryContextFactory.Deserialize(stored)), StatusJsonContext.Default.InvocationStatusReport)
                : Results.NotFound());
        return endpoints;
    }
}
