using MassTransit;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using RunnerService.Contracts.Client;
using RunnerService.Hosting;

namespace RunnerService.Cli;

/// <summary>A small bus-only host for the CLI verbs: same broker configuration as the service, quiet logs.</summary>
static class CliHost
{
    /// <summary>How long the CLI tries to reach the broker before it says it cannot.</summary>
    static readonly TimeSpan ConnectPatience = TimeSpan.FromSeconds(10);

    public static async Task<IHost> StartAsync(CancellationToken cancellationToken)
    {
        var builder = Host.CreateApplicationBuilder();
        // stdout carries the CLI's answer only; logs go to stderr, and only problems. MassTransit's own (connection
        // retries with their stack traces) stay out: the CLI says what went wrong in one line.
        builder.Logging.ClearProviders();
        builder.Logging.AddConsole(o => o.LogToStandardErrorThreshold = LogLevel.Trace);
        builder.Logging.SetMinimumLevel(LogLevel.Warning);
        builder.Logging.AddFilter("Microsoft.Hosting.Lifetime", LogLevel.Warning);
        builder.Logging.AddFilter("MassTransit", LogLevel.None);
        builder.Logging.AddFilter("Microsoft.Extensions.Hosting", LogLevel.None);
        builder.Services.Configure<ConsoleLifetimeOptions>(o => o.SuppressStatusMessages = true);
        BrokerConnection broker;
        try
        {
            broker = BrokerConnection.Resolve(builder.Configuration);
        }
        catch (InvalidOperationException ex)
        {
            throw new CliFailure(CliApp.BadConfiguration, ex.Message);
        }
        builder.Services.AddMassTransit(x =>
        {
            x.DisableUsageTelemetry();
            x.UsingRabbitMq((_, cfg) => broker.Configure(cfg));
        });
        builder.Services.AddInvocationClient();
        builder.Services.Configure<MassTransitHostOptions>(o => o.WaitUntilStarted = true);
        var host = builder.Build();
        using var patience = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        patience.CancelAfter(ConnectPatience);
        try
        {
            await host.StartAsync(patience.Token).ConfigureAwait(false);
            return host;
        }
        catch (Exception ex) when (!cancellationToken.IsCancellationRequested)
        {
            await StopQuietlyAsync(host).ConfigureAwait(false);
            var reason = ex is OperationCanceledException ? $"no connection within {ConnectPatience.TotalSeconds:0} s" : ex.GetBaseException().Message;
            throw new CliFailure(CliApp.Unavailable, $"cannot reach the broker at {Describe(broker)}: {reason}");
        }
        catch
        {
            await StopQuietlyAsync(host).ConfigureAwait(false);
            throw;
        }
    }

    static async Task StopQuietlyAsync(IHost host)
    {
        try
        {
            using var stop = new CancellationTokenSource(TimeSpan.FromSeconds(3));
            await host.StopAsync(stop.Token).ConfigureAwait(false);
        }
        catch (Exception)
        {
            // it never started; nothing to report beyond the failure itself
        }
        host.Dispose();
    }

    /// <summary>The broker address without its credentials.</summary>
    static string Describe(BrokerConnection broker) =>
        $"{broker.Primary.Scheme}://{string.Join(',', broker.Endpoints)}{broker.Primary.AbsolutePath}";
}
