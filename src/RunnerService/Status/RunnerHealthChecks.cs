using System.Text;
using MassTransit;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Diagnostics.HealthChecks;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using RunnerService.Recovery;
using RunnerService.Saga.Persistence;

namespace RunnerService.Status;

/// <summary>
/// Health checks (Microsoft.Extensions.Diagnostics.HealthChecks) behind <c>/health/live</c> and <c>/health/ready</c>:
/// <list type="bullet">
/// <item><c>own-queue</c> (live and ready): this replica's own queue still delivers (<see cref="BrokerContact.OwnQueueDeaf"/>).</item>
/// <item><c>bus</c> (ready): MassTransit's own bus health check; a degraded bus (an endpoint not connected) is not ready.</item>
/// <item><c>saga-store</c> (ready): a cheap query against the configured store, SQLite or PostgreSQL.</item>
/// </list>
/// The body is one plain-text line: <c>live</c> / <c>ready</c>, or <c>not live: …</c> / <c>not ready: …</c> naming
/// each failing check and why.
/// </summary>
public static class RunnerHealthChecks
{
    public const string LiveTag = "live";
    public const string ReadyTag = "ready";

    public static IServiceCollection AddRunnerHealthChecks(this IServiceCollection services)
    {
        services.AddHealthChecks()
            .AddCheck<OwnQueueHealthCheck>("own-queue", HealthStatus.Unhealthy, [LiveTag, ReadyTag])
            .AddCheck<SagaStoreHealthCheck>("saga-store", HealthStatus.Unhealthy, [ReadyTag], timeout: TimeSpan.FromSeconds(10));
        return services;
    }

    /// <summary>MassTransit registers its bus check itself (tags <c>ready</c>, <c>masstransit</c>); this names it <c>bus</c>.</summary>
    public static void ConfigureBusHealthCheck(IBusRegistrationConfigurator configurator) =>
        configurator.ConfigureHealthCheckOptions(o =>
        {
            o.Name = "bus";
            o.MinimalFailureStatus = HealthStatus.Unhealthy;
            o.Tags.Add(ReadyTag);
        });

    public static IEndpointRouteBuilder MapRunnerHealth(this IEndpointRouteBuilder endpoints)
    {
        endpoints.MapHealthChecks("/health/live", Options(LiveTag, "live"));
        endpoints.MapHealthChecks("/health/ready", Options(ReadyTag, "ready"));
        return endpoints;
    }

    static HealthCheckOptions Options(string tag, string word) => new()
    {
        Predicate = registration => registration.Tags.Contains(tag),
        // Degraded fails too: a bus with an endpoint that is not connected does not take its share of the work.
        ResultStatusCodes =
        {
            [HealthStatus.Healthy] = StatusCodes.Status200OK,
            [HealthStatus.Degraded] = StatusCodes.Status503ServiceUnavailable,
            [HealthStatus.Unhealthy] = StatusCodes.Status503ServiceUnavailable,
        },
        ResponseWriter = (context, report) => WriteAsync(context, report, word),
        AllowCachingResponses = false,
    };

    static Task WriteAsync(HttpContext context, HealthReport report, string word)
    {
        context.Response.ContentType = "text/plain; charset=utf-8";
        if (report.Status == HealthStatus.Healthy)
            return context.Response.WriteAsync(word);
        var text = new StringBuilder($"not {word}:");
        var first = true;
        foreach (var (name, entry) in report.Entries)
        {
            if (entry.Status == HealthStatus.Healthy)
                continue;
            text.Append(first ? " " : "; ").Append(name).Append(' ').Append(entry.Status)
                .Append(": ").Append(entry.Description ?? entry.Exception?.Message ?? "no description");
            first = false;
        }
        return context.Response.WriteAsync(text.ToString());
    }

    sealed class OwnQueueHealthCheck(BrokerContact contact) : IHealthCheck
    {
        // A replica whose own queue stopped delivering cannot resume its paused workers; a restart reroutes them.
        public Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken) =>
            Task.FromResult(contact.OwnQueueDeaf
                ? HealthCheckResult.Unhealthy($"this replica's own queue has delivered nothing for {contact.EchoSilence.TotalSeconds:F0} s while the broker takes its heartbeats")
                : HealthCheckResult.Healthy());
    }

    sealed class SagaStoreHealthCheck(ISagaStore store) : IHealthCheck
    {
        public async Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken) =>
            await store.PingAsync(cancellationToken).ConfigureAwait(false)
                ? HealthCheckResult.Healthy()
                : HealthCheckResult.Unhealthy("the saga store does not answer");
    }
}
