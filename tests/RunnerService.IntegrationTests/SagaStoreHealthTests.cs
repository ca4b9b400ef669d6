using System.Net;
using Npgsql;
using RunnerService.IntegrationTests.Infrastructure;
using RunnerService.TestSupport;
using Xunit.Abstractions;

namespace RunnerService.IntegrationTests;

/// <summary>/health/ready follows the PostgreSQL saga store: unreachable, not ready; back, ready again.</summary>
[Collection(BrokerCollection.Name)]
[Trait("Category", "Integration")]
public sealed class SagaStoreHealthTests(BrokerFixture broker, PostgresFixture postgres, ITestOutputHelper output) : IClassFixture<PostgresFixture>
{
    [Fact]
    public async Task Ready_fails_while_the_postgres_saga_store_is_unreachable_and_recovers_when_it_is_back()
    {
        var server = new NpgsqlConnectionStringBuilder(await postgres.GetConnectionStringAsync());
        await using var proxy = new TcpProxy(new Uri($"tcp://127.0.0.1:{server.Port}"));
        var through = new NpgsqlConnectionStringBuilder(server.ConnectionString) { Host = "127.0.0.1", Port = proxy.Port, Timeout = 3 };
        await using var env = await RunnerEnvironment.StartAsync(broker, output, slots: 1, new Dictionary<string, string>
        {
            ["ConnectionStrings__Sagas"] = through.ConnectionString,
            ["Runner__SagaSchema"] = postgres.NewSchema("ready"),
        });
        using var http = new HttpClient { BaseAddress = env.Runner.HttpBase, Timeout = TimeSpan.FromSeconds(20) };
        var settings = (await env.Runner.GetStatusAsync()).Settings!;
        Assert.Equal("postgres", settings.SagaStore);
        // user@host:port/database schema …, never the password.
        Assert.StartsWith($"{server.Username}@127.0.0.1:{proxy.Port}/{server.Database} schema ready_", settings.SagaStoreLocation, StringComparison.Ordinal);

        proxy.Cut();
        await TestBus.PollAsync(async () => await env.Runner.IsReadyAsync() ? null : "", TimeSpan.FromSeconds(30), "/health/ready to fail");
        using (var ready = await http.GetAsync("health/ready"))
        {
            var body = await ready.Content.ReadAsStringAsync();
            output.WriteLine(body);
            Assert.Equal(HttpStatusCode.ServiceUnavailable, ready.StatusCode);
            Assert.Contains("saga-store Unhealthy", body, StringComparison.Ordinal);
        }
        using (var live = await http.GetAsync("health/live"))
            Assert.Equal(HttpStatusCode.OK, live.StatusCode);

        proxy.Heal();
        await TestBus.PollAsync(async () => await env.Runner.IsReadyAsync() ? "" : null, TimeSpan.FromSeconds(60), "/health/ready to recover");
        Assert.False(env.Runner.HasExited);
    }
}
