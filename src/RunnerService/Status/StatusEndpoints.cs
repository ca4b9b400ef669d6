using MassTransit;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;
using RunnerService.Hosting;
using RunnerService.Processes;
using RunnerService.Slots;

namespace RunnerService.Status;

/// <summary>Loopback HTTP: liveness, readiness (bus connected) and a status listing of the worker processes.</summary>
public static class StatusEndpoints
{
    public static IEndpointRouteBuilder MapRunnerStatus(this IEndpointRouteBuilder endpoints)
    {
        endpoints.MapGet("/health/live", () => Results.Text("live"));
        endpoints.MapGet("/health/ready", (IBusControl bus) =>
        {
            var health = bus.CheckHealth();
            return health.Status == BusHealthStatus.Healthy
                ? Results.Text("ready")
                : Results.Text($"not ready: {health.Description}", statusCode: StatusCodes.Status503ServiceUnavailable);
        });
        endpoints.MapGet("/status", (SlotPool slots, IServiceProvider services, IOptions<RunnerOptions> options) =>
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
            }, StatusJsonContext.Default.RunnerStatus);
        });
        return endpoints;
    }
}
