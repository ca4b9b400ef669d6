using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Options;
using RunnerService.Hosting;

namespace RunnerService.Tests;

/// <summary>/health/live and /health/ready are made of health checks (docs/operations.md): which ones, with which tags.</summary>
[Trait("Category", "Unit")]
public sealed class HealthCheckRegistrationTests
{
    [Fact]
    public void Ready_runs_the_bus_the_saga_store_and_the_own_queue_checks_and_live_only_the_own_queue_check()
    {
        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true });
        builder.Configuration.AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["ConnectionStrings:Sagas"] = "Data Source=:memory:",
            ["Runner:WorkerCommand"] = "/bin/true",
        });
        builder.AddRunnerService();
        using var host = builder.Build();

        var registrations = host.Services.GetRequiredService<IOptions<HealthCheckServiceOptions>>().Value.Registrations;
        string[] Tagged(string tag) => [.. registrations.Where(r => r.Tags.Contains(tag)).Select(r => r.Name).Order()];

        Assert.Equal(["bus", "own-queue", "saga-store"], Tagged("ready"));
        Assert.Equal(["own-queue"], Tagged("live"));
        Assert.All(registrations, r => Assert.Equal(HealthStatus.Unhealthy, r.FailureStatus));
    }

    [Fact]
    public void The_settings_name_the_broker_and_the_store_without_their_passwords()
    {
        Assert.Equal("runner@rabbit.example:5671/prod", EffectiveSettings.DescribeBroker(BrokerConnection.Parse("amqps://runner:s3cret@rabbit.example/prod")));
        Assert.Equal("guest@127.0.0.1:5682/", EffectiveSettings.DescribeBroker(BrokerConnection.Parse("amqp://guest:guest@127.0.0.1:5682/")));
        Assert.Equal("127.0.0.1:5672/", EffectiveSettings.DescribeBroker(BrokerConnection.Parse("amqp://127.0.0.1")));

        var postgres = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["ConnectionStrings:Sagas"] = "Host=db.example;Port=5433;Database=runner;Username=svc;Password=s3cret",
            ["Runner:SagaSchema"] = "blue",
        }).Build();
        Assert.Equal(("postgres", "svc@db.example:5433/runner schema blue"), EffectiveSettings.DescribeSagaStore(postgres));

        var sqlite = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["ConnectionStrings:Sagas"] = "Data Source=/var/lib/runner/sagas.db",
        }).Build();
        Assert.Equal(("sqlite", "/var/lib/runner/sagas.db"), EffectiveSettings.DescribeSagaStore(sqlite));
        Assert.Equal(("sqlite", Path.Combine(AppContext.BaseDirectory, "data", "sagas.db")), EffectiveSettings.DescribeSagaStore(new ConfigurationBuilder().Build()));
    }
}
