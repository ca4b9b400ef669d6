using MassTransit;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;
using RunnerService.Hosting;
using RunnerService.Processes;
using RunnerService.Recovery;
using RunnerService.Saga;
using RunnerService.Saga.Persistence;
using RunnerService.Slots;

namespace RunnerService.Status;

/// <summary>
/// Loopback HTTP: liveness (fails only when its own queue stopped delivering), readiness (bus connected, store
/// answering, own queue delivering), a status listing of the worker processes, and one invocation's saga record
/// (read-only).
/// </summary>
public static class StatusEndpoints
{
    public static IEndpointRouteBuilder MapRunnerStatus(this IEndpointRouteBuilder endpoints)
    {
        // A replica whose own queue stopped delivering cannot resume its paused workers; a restart reroutes them.
        endpoints.MapGet("/health/live", (BrokerContact contact) => contact.OwnQueueDeaf
            ? Results.Text(DeafText(contact), statusCode: StatusCodes.Status503ServiceUnavailable)
            : Results.Text("live"));
        endpoints.MapGet("/health/ready", async (IBusControl bus, ISagaStore store, BrokerContact contact, CancellationToken cancellationToken) =>
        {
            if (contact.OwnQueueDeaf)
                return Results.Text(DeafText(contact), statusCode: StatusCodes.Status503ServiceUnavailable);
            var health = bus.CheckHealth();
            if (health.Status != BusHealthStatus.Healthy)
                return Results.Text($"not ready: bus {health.Status}: {health.Description}", statusCode: StatusCodes.Status503ServiceUnavailable);
            if (!await store.PingAsync(cancellationToken))
                return Results.Text("not ready: the saga store does not answer", statusCode: StatusCodes.Status503ServiceUnavailable);
            return Results.Text("ready");
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
        // What the CLI's `status` shows (the same InvocationStatusReport), read from the saga store like the
        // GetInvocationStatus consumer does: no lock, no write. 404 when the saga has no record of the id.
        endpoints.MapGet("/invocations/{id:guid}", async (Guid id, ISagaStore store, CancellationToken cancellationToken) =>
            await store.ReadAsync(id, cancellationToken) is { } stored
                ? Results.Json(InvocationStateMachine.Report(InvocationSagaRepositoryContextFactory.Deserialize(stored)), StatusJsonContext.Default.InvocationStatusReport)
                : Results.NotFound());
        return endpoints;
    }

    static string DeafText(BrokerContact contact) =>
        $"not live: this replica's own queue has delivered nothing for {contact.EchoSilence.TotalSeconds:F0} s while the broker takes its heartbeats";
}
