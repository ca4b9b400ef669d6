using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using OpenTelemetry;
using OpenTelemetry.Logs;
using OpenTelemetry.Metrics;
using OpenTelemetry.Resources;
using OpenTelemetry.Trace;
using RunnerService.Hosting;
using RunnerService.Processes;
using RunnerService.Slots;

namespace RunnerService.Telemetry;

public static class TelemetryRegistration
{
    /// <summary>Configuration switch for the console exporter of all three signals (local debugging).</summary>
    public const string ConsoleSwitch = "Runner:ConsoleTelemetry";

    /// <summary>Configuration switch for the loopback <c>/metrics</c> endpoint (on by default).</summary>
    public const string MetricsEndpointSwitch = "Runner:MetricsEndpoint";

    /// <summary>
    /// OpenTelemetry tracing, metrics and logs. OTLP only when <c>OTEL_EXPORTER_OTLP_ENDPOINT</c> is set (every
    /// standard OTEL_* variable is honoured); console exporters when <c>Runner:ConsoleTelemetry=true</c>.
    /// </summary>
    public static IHostApplicationBuilder AddRunnerTelemetry(this IHostApplicationBuilder builder)
    {
        var otlp = !string.IsNullOrWhiteSpace(builder.Configuration["OTEL_EXPORTER_OTLP_ENDPOINT"]);
        var console = builder.Configuration.GetValue<bool>(ConsoleSwitch);
        var instanceId = builder.Configuration["Runner:InstanceId"];

        builder.Services.AddSingleton<PrometheusTextMetrics>();
        builder.Services.AddHostedService<MetricsBinding>();

        // No exporter, no SDK: the spans and the OpenTelemetry log provider would only cost time. The /metrics
        // endpoint listens to the meter on its own.
        if (!otlp && !console)
            return builder;
        builder.Logging.AddOpenTelemetry(logging =>
        {
            logging.IncludeScopes = true;
            logging.IncludeFormattedMessage = true;
            if (console)
                logging.AddConsoleExporter();
        });
        var telemetry = builder.Services.AddOpenTelemetry()
            .ConfigureResource(resource => resource.AddService(builder.Configuration["OTEL_SERVICE_NAME"] ?? "RunnerService", serviceInstanceId: string.IsNullOrWhiteSpace(instanceId) ? null : instanceId))
            .WithTracing(tracing =>
            {
                tracing.AddSource(RunnerActivitySource.Name, "MassTransit");
                if (console)
                    tracing.AddConsoleExporter();
            })
            .WithMetrics(metrics =>
            {
                metrics.AddMeter(RunnerMetrics.MeterName, "MassTransit");
                metrics.AddRuntimeInstrumentation();
                if (console)
                    metrics.AddConsoleExporter();
            });
        if (otlp)
            telemetry.UseOtlpExporter();
        return builder;
    }

    /// <summary>Maps <c>GET /metrics</c> (Prometheus text of the "RunnerService" meter) unless switched off.</summary>
    public static IEndpointRouteBuilder MapRunnerMetrics(this IEndpointRouteBuilder endpoints)
    {
        var configuration = endpoints.ServiceProvider.GetRequiredService<IConfiguration>();
        if (!configuration.GetValue(MetricsEndpointSwitch, true))
            return endpoints;
        // Resolved now so the listener sees every measurement from the start.
        var metrics = endpoints.ServiceProvider.GetRequiredService<PrometheusTextMetrics>();
        endpoints.MapGet("/metrics", () => Results.Text(metrics.Render(), "text/plain; version=0.0.4; charset=utf-8"));
        return endpoints;
    }

    /// <summary>Points the observable gauges at this replica's slot pool and supervisor, and caps the task labels.</summary>
    sealed class MetricsBinding(SlotPool slots, WorkerSupervisor supervisor, IOptions<RunnerOptions> options) : IHostedService
    {
        public Task StartAsync(CancellationToken cancellationToken)
        {
            RunnerMetrics.Bind(slots, supervisor, options.Value.MaxTaskLabels);
            return Task.CompletedTask;
        }

        public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
    }
}
