using System.Diagnostics;
using System.Net.Http.Headers;
using System.Text;
using RunnerService.TestSupport;
using Testcontainers.RabbitMq;
using Xunit.Abstractions;
using Xunit.Sdk;

namespace RunnerService.IntegrationTests.Infrastructure;

/// <summary>
/// One real RabbitMQ broker per test run, found in this order: <c>RABBITMQ_URL</c> (with
/// <c>RABBITMQ_MANAGEMENT_URL</c>, as deploy/local/run-tests.sh sets them); a Testcontainers container when a Docker
/// engine answers; else a private broker started here with deploy/local/rabbitmq.sh and stopped at the end.
/// Tests isolate themselves with a virtual host each.
/// </summary>
public sealed class BrokerFixture(IMessageSink diagnostics) : IAsyncLifetime
{
    const string LocalBrokerDir = "/tmp/runnerservice-fixture-broker";
    static readonly Dictionary<string, string> LocalBrokerPorts = new()
    {
        ["RUNNER_BROKER_DIR"] = LocalBrokerDir,
        ["RUNNER_BROKER_PORT"] = "5722",
        ["RUNNER_BROKER_MGMT_PORT"] = "15722",
        ["RUNNER_BROKER_DIST_PORT"] = "25722",
        ["RUNNER_BROKER_EPMD_PORT"] = "4422",
        ["RUNNER_BROKER_PROMETHEUS_PORT"] = "16722",
    };

    RabbitMqContainer? _container;
    bool _startedLocal;
    HttpClient _management = null!;

    public Uri AmqpUri { get; private set; } = null!;
    public Uri ManagementUri { get; private set; } = null!;
    public string Source { get; private set; } = "";

    public async Task InitializeAsync()
    {
        // Once per test run, on the console (xunit.runner.json: diagnosticMessages): which stock worker build runs.
        diagnostics.OnMessage(new DiagnosticMessage(StockWorker.Note));
        var url = Environment.GetEnvironmentVariable("RABBITMQ_URL");
        if (!string.IsNullOrWhiteSpace(url))
        {
            AmqpUri = new Uri(url);
            ManagementUri = new Uri(Environment.GetEnvironmentVariable("RABBITMQ_MANAGEMENT_URL")
                ?? throw new InvalidOperationException("RABBITMQ_URL is set but RABBITMQ_MANAGEMENT_URL is not; the tests need the management API for virtual hosts."));
            Source = "RABBITMQ_URL";
        }
        else if (await TryStartContainerAsync())
        {
            Source = "Testcontainers";
        }
        else
        {
            await StartLocalBrokerAsync();
            Source = "deploy/local/rabbitmq.sh";
        }

        _management = new HttpClient { BaseAddress = new Uri(ManagementUri.GetLeftPart(UriPartial.Authority)) };
        var credentials = Uri.UnescapeDataString(ManagementUri.UserInfo is { Length: > 0 } info ? info : "guest:guest");
        _management.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Basic", Convert.ToBase64String(Encoding.UTF8.GetBytes(credentials)));
    }

    async Task<bool> TryStartContainerAsync()
    {
        try
        {
            _container = new RabbitMqBuilder("rabbitmq:3.13-management").WithPortBinding(15672, true).Build();
            await _container.StartAsync();
            AmqpUri = new Uri(_container.GetConnectionString());
            ManagementUri = new Uri($"http://guest:guest@{_container.Hostname}:{_container.GetMappedPublicPort(15672)}/");
            return true;
        }
        catch (Exception ex) when (ex.GetType().Name.Contains("Docker", StringComparison.Ordinal) || ex is InvalidOperationException or ArgumentException or HttpRequestException)
        {
            _container = null;
            return false;
        }
    }

    async Task StartLocalBrokerAsync()
    {
        var (exitCode, output) = await RunScriptAsync("start");
        if (exitCode != 0)
            throw new InvalidOperationException($"deploy/local/rabbitmq.sh start failed ({exitCode}):\n{output}");
        _startedLocal = true;
        foreach (var line in output.Split('\n'))
        {
            if (line.StartsWith("export RABBITMQ_URL=", StringComparison.Ordinal))
                AmqpUri = new Uri(line["export RABBITMQ_URL=".Length..].Trim());
            if (line.StartsWith("export RABBITMQ_MANAGEMENT_URL=", StringComparison.Ordinal))
                ManagementUri = new Uri(line["export RABBITMQ_MANAGEMENT_URL=".Length..].Trim());
        }
    }

    static async Task<(int ExitCode, string Output)> RunScriptAsync(string verb)
    {
        var start = new ProcessStartInfo("bash") { RedirectStandardOutput = true, RedirectStandardError = true };
        start.ArgumentList.Add(Path.Combine(RepoPaths.Root, "deploy", "local", "rabbitmq.sh"));
        start.ArgumentList.Add(verb);
        foreach (var (key, value) in LocalBrokerPorts)
            start.Environment[key] = value;
        using var process = Process.Start(start)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        await process.WaitForExitAsync();
        return (process.ExitCode, await stdout + await stderr);
    }

    /// <summary>A fresh virtual host for one test: its own queues and exchanges, nothing shared with other tests.</summary>
    public async Task<TestVirtualHost> CreateVirtualHostAsync(string testName)
    {
        var name = $"t-{testName}-{Guid.NewGuid():N}"[..Math.Min(60, testName.Length + 35)];
        (await _management.PutAsync($"api/vhosts/{Uri.EscapeDataString(name)}", null)).EnsureSuccessStatusCode();
        var user = Uri.UnescapeDataString(AmqpUri.UserInfo.Split(':')[0]);
        using var permissions = new StringContent("{\"configure\":\".*\",\"write\":\".*\",\"read\":\".*\"}", Encoding.UTF8, "application/json");
        (await _management.PutAsync($"api/permissions/{Uri.EscapeDataString(name)}/{Uri.EscapeDataString(user)}", permissions)).EnsureSuccessStatusCode();
        var amqp = new UriBuilder(AmqpUri) { Path = "/" + Uri.EscapeDataString(name) }.Uri;
        return new TestVirtualHost(name, amqp, this);
    }

    /// <summary>A broker user with its own password, allowed on one virtual host; returns the amqp:// URL with its credentials.</summary>
    public async Task<Uri> CreateUserAsync(string user, string password, string virtualHost)
    {
        using var body = new StringContent($"{{\"password\":\"{password}\",\"tags\":\"\"}}", Encoding.UTF8, "application/json");
        (await _management.PutAsync($"api/users/{Uri.EscapeDataString(user)}", body)).EnsureSuccessStatusCode();
        using var permissions = new StringContent("{\"configure\":\".*\",\"write\":\".*\",\"read\":\".*\"}", Encoding.UTF8, "application/json");
        (await _management.PutAsync($"api/permissions/{Uri.EscapeDataString(virtualHost)}/{Uri.EscapeDataString(user)}", permissions)).EnsureSuccessStatusCode();
        return new UriBuilder(AmqpUri) { UserName = user, Password = password, Path = "/" + Uri.EscapeDataString(virtualHost) }.Uri;
    }

    /// <summary>The type of a queue (classic, quorum …) from the management API.</summary>
    /// <summary>
    /// Removes the binding from the exchange of the same name to a queue (how MassTransit addresses <c>queue:NAME</c>):
    /// until it is restored, whatever is sent there is dropped, unroutable, though the broker confirms the send.
    /// </summary>
    public async Task UnbindQueueAsync(string virtualHost, string queue) =>
        (await _management.DeleteAsync($"api/bindings/{Uri.EscapeDataString(virtualHost)}/e/{Uri.EscapeDataString(queue)}/q/{Uri.EscapeDataString(queue)}/~")).EnsureSuccessStatusCode();

    public async Task BindQueueAsync(string virtualHost, string queue)
    {
        using var body = new StringContent("{\"routing_key\":\"\"}", Encoding.UTF8, "application/json");
        (await _management.PostAsync($"api/bindings/{Uri.EscapeDataString(virtualHost)}/e/{Uri.EscapeDataString(queue)}/q/{Uri.EscapeDataString(queue)}", body)).EnsureSuccessStatusCode();
    }

    public async Task<string> QueueTypeAsync(string virtualHost, string queue)
    {
        using var response = await _management.GetAsync($"api/queues/{Uri.EscapeDataString(virtualHost)}/{Uri.EscapeDataString(queue)}");
        response.EnsureSuccessStatusCode();
        using var doc = System.Text.Json.JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        return doc.RootElement.GetProperty("type").GetString()!;
    }

    /// <summary>
    /// How many messages the broker has routed into a queue since it was declared (management statistics, which lag
    /// by up to one statistics interval, 5 s by default).
    /// </summary>
    public async Task<long> MessagesRoutedToQueueAsync(string virtualHost, string queue)
    {
        using var response = await _management.GetAsync($"api/queues/{Uri.EscapeDataString(virtualHost)}/{Uri.EscapeDataString(queue)}");
        response.EnsureSuccessStatusCode();
        using var doc = System.Text.Json.JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        return doc.RootElement.TryGetProperty("message_stats", out var stats) && stats.TryGetProperty("publish", out var publish) ? publish.GetInt64() : 0;
    }

    /// <summary>The exchanges a queue is bound to ("" is the default exchange, which every queue has).</summary>
    public async Task<IReadOnlyList<string>> QueueBindingSourcesAsync(string virtualHost, string queue)
    {
        using var response = await _management.GetAsync($"api/queues/{Uri.EscapeDataString(virtualHost)}/{Uri.EscapeDataString(queue)}/bindings");
        response.EnsureSuccessStatusCode();
        using var doc = System.Text.Json.JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        return doc.RootElement.EnumerateArray().Select(b => b.GetProperty("source").GetString() ?? "").ToList();
    }

    /// <summary>The names of every queue in a virtual host (management API).</summary>
    public async Task<IReadOnlyList<string>> QueueNamesAsync(string virtualHost)
    {
        using var response = await _management.GetAsync($"api/queues/{Uri.EscapeDataString(virtualHost)}?columns=name");
        response.EnsureSuccessStatusCode();
        using var doc = System.Text.Json.JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        return doc.RootElement.EnumerateArray().Select(q => q.GetProperty("name").GetString()!).ToList();
    }

    /// <summary>Declares a durable classic queue through the management API.</summary>
    public async Task DeclareQueueAsync(string virtualHost, string queue)
    {
        using var body = new StringContent("{\"durable\":true}", Encoding.UTF8, "application/json");
        (await _management.PutAsync($"api/queues/{Uri.EscapeDataString(virtualHost)}/{Uri.EscapeDataString(queue)}", body)).EnsureSuccessStatusCode();
    }

    public async Task PutUserAsync(string user, HttpContent body) =>
        (await _management.PutAsync($"api/users/{Uri.EscapeDataString(user)}", body)).EnsureSuccessStatusCode();

    public async Task DeleteUserAsync(string user)
    {
        try
        {
            await _management.DeleteAsync($"api/users/{Uri.EscapeDataString(user)}");
        }
        catch (HttpRequestException)
        {
        }
    }

    internal async Task DeleteVirtualHostAsync(string name)
    {
        try
        {
            await _management.DeleteAsync($"api/vhosts/{Uri.EscapeDataString(name)}");
        }
        catch (HttpRequestException)
        {
            // the broker may be stopped by a test; the whole broker goes at the end anyway
        }
    }

    public async Task DisposeAsync()
    {
        _management?.Dispose();
        if (_container is not null)
            await _container.DisposeAsync();
        if (_startedLocal)
            await RunScriptAsync("stop");
    }
}

/// <summary>
/// The integration tests share one broker, and one PostgreSQL server for the tests that ask for it (it starts on
/// first use, so the other categories run without one).
/// </summary>
[CollectionDefinition(Name)]
public sealed class BrokerCollection : ICollectionFixture<BrokerFixture>, ICollectionFixture<PostgresFixture>
{
    public const string Name = "broker";
}
