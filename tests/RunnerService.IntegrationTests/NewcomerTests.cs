using System.Net;
using System.Text.Json;
using System.Text.Json.Nodes;
using RunnerService.IntegrationTests.Infrastructure;
using Xunit.Abstractions;

namespace RunnerService.IntegrationTests;

/// <summary>
/// What a new user meets first (issue 16, "The newcomer's path"): which appsettings.json is read, the settings the
/// service says it runs with, and what its health endpoints report.
/// </summary>
[Collection(BrokerCollection.Name)]
[Trait("Category", "Integration")]
public sealed class NewcomerTests(BrokerFixture broker, ITestOutputHelper output)
{
    [Fact]
    public async Task The_appsettings_json_next_to_the_service_is_read_when_the_service_starts_from_another_folder()
    {
        await using var env = await RunnerEnvironment.StartAsync(broker, output, slots: 1, runners: 0);
        // A copy of the service, so its appsettings.json can say something of its own: Runner:Slots = 3.
        var service = Path.Combine(env.StateDirectory, "service");
        CopyDirectory(RepoPaths.ServiceDirectory, service);
        var settingsFile = Path.Combine(service, "appsettings.json");
        var json = JsonNode.Parse(File.ReadAllText(settingsFile))!.AsObject();
        json["Runner"] = new JsonObject { ["Slots"] = 3 };
        File.WriteAllText(settingsFile, json.ToJsonString());
        // The current folder (a repository root, say) has an appsettings.json of its own, which is not read.
        var elsewhere = Path.Combine(env.StateDirectory, "elsewhere");
        Directory.CreateDirectory(elsewhere);
        File.WriteAllText(Path.Combine(elsewhere, "appsettings.json"), """{ "Runner": { "Slots": 5 } }""");

        var runner = await env.StartRunnerAsync(slots: null, serviceDll: Path.Combine(service, "RunnerService.dll"), workingDirectory: elsewhere);

        var status = await runner.GetStatusAsync();
        Assert.Equal(3, status.SlotsTotal);
        // And the service says which file it did not read, and which it read instead.
        await TestBus.PollAsync(() => Task.FromResult(runner.Output.Contains("is NOT read", StringComparison.Ordinal) ? "" : null),
            TimeSpan.FromSeconds(5), "the warning about the current folder's appsettings.json");
        Assert.Contains(Path.Combine(elsewhere, "appsettings.json"), runner.Output, StringComparison.Ordinal);
        Assert.Contains(settingsFile, runner.Output, StringComparison.Ordinal);
    }

    [Fact]
    public async Task The_effective_settings_are_logged_at_start_and_shown_in_status_without_passwords()
    {
        await using var env = await RunnerEnvironment.StartAsync(broker, output, slots: 2);
        var amqp = env.VirtualHost.AmqpUri;
        var expectedBroker = $"{amqp.UserInfo.Split(':')[0]}@{amqp.Host}:{amqp.Port}/{Uri.UnescapeDataString(amqp.AbsolutePath.TrimStart('/'))}";

        using var http = new HttpClient { BaseAddress = env.Runner.HttpBase };
        var raw = await http.GetStringAsync("status");
        output.WriteLine(raw);
        Assert.DoesNotContain(amqp.UserInfo, raw, StringComparison.Ordinal); // user:password
        var settings = (await env.Runner.GetStatusAsync()).Settings;
        Assert.NotNull(settings);
        Assert.Equal(2, settings.Slots);
        Assert.Equal(expectedBroker, settings.Broker);
        Assert.Equal("sqlite", settings.SagaStore);
        Assert.Equal(env.SagaDatabase, settings.SagaStoreLocation);
        Assert.Equal(RepoPaths.ServiceDirectory.TrimEnd('/'), settings.ContentRoot.TrimEnd('/'));
        Assert.True(File.Exists(settings.WorkerCommand), settings.WorkerCommand);
        if (StockWorker.WorkerCommandOverride is null)
        {
            Assert.Equal(settings.WorkerCommand.EndsWith("/worker/WorkerProcess", StringComparison.Ordinal) ? "stock-aot" : "stock-jit", settings.WorkerKind);
        }

        await TestBus.PollAsync(() => Task.FromResult(env.Runner.Output.Contains("Settings: workers ", StringComparison.Ordinal) ? "" : null),
            TimeSpan.FromSeconds(5), "the settings line");
        var line = env.Runner.Output.Split('\n').First(l => l.Contains("Settings: workers ", StringComparison.Ordinal));
        output.WriteLine(line);
        Assert.Contains($"{settings.WorkerCommand} ({settings.WorkerKind}), 2 slots, broker {expectedBroker}, saga store sqlite {env.SagaDatabase}", line, StringComparison.Ordinal);
        Assert.DoesNotContain(amqp.UserInfo, env.Runner.Output, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Ready_fails_while_the_saga_store_is_gone_and_recovers_when_it_is_back()
    {
        await using var env = await RunnerEnvironment.StartAsync(broker, output, slots: 1, runners: 0);
        var store = Path.Combine(env.StateDirectory, "store");
        var runner = await env.StartRunnerAsync(1, new Dictionary<string, string> { ["ConnectionStrings__Sagas"] = $"Data Source={Path.Combine(store, "sagas.db")}" });
        using var http = new HttpClient { BaseAddress = runner.HttpBase, Timeout = TimeSpan.FromSeconds(15) };
        using (var ready = await http.GetAsync("health/ready"))
        {
            Assert.Equal(HttpStatusCode.OK, ready.StatusCode);
            Assert.Equal("ready", await ready.Content.ReadAsStringAsync());
        }

        // The store's folder disappears (an unmounted volume, a deleted file): the service's open connections still
        // read the old file, but the store is gone.
        Directory.Move(store, store + "-away");
        await TestBus.PollAsync(async () => await runner.IsReadyAsync() ? null : "", TimeSpan.FromSeconds(30), "/health/ready to fail");
        using (var ready = await http.GetAsync("health/ready"))
        {
            var body = await ready.Content.ReadAsStringAsync();
            output.WriteLine(body);
            Assert.Equal(HttpStatusCode.ServiceUnavailable, ready.StatusCode);
            Assert.StartsWith("not ready: saga-store Unhealthy: the saga store does not answer", body, StringComparison.Ordinal);
        }
        using (var live = await http.GetAsync("health/live"))
        {
            Assert.Equal(HttpStatusCode.OK, live.StatusCode);
            Assert.Equal("live", await live.Content.ReadAsStringAsync());
        }

        Directory.Move(store + "-away", store);
        await TestBus.PollAsync(async () => await runner.IsReadyAsync() ? "" : null, TimeSpan.FromSeconds(30), "/health/ready to recover");
        Assert.False(runner.HasExited);
    }

    [Fact]
    public async Task Status_of_a_short_invocation_shows_the_process_it_ran_in_never_pid_0()
    {
        await using var env = await RunnerEnvironment.StartAsync(broker, output, slots: 1);
        // Shorter than Runner:TrackAfter: the saga hears of it only with its completion.
        var completed = await env.Bus.Client.RunAsync("echo", Json.Parse("{}")).WaitAsync(TimeSpan.FromSeconds(60));
        Assert.True(completed.ProcessId > 0);
        await TestBus.PollAsync(async () => (await env.Bus.Client.GetStatusAsync(completed.InvocationId)).Status == "Succeeded" ? "" : null,
            TimeSpan.FromSeconds(30), "the saga's record");

        var (exit, stdout, _) = await Cli.RunAsync(env.Bus.Broker, "status", completed.InvocationId.ToString());
        output.WriteLine(stdout);
        Assert.Equal(0, exit);
        Assert.DoesNotContain("pid 0", stdout, StringComparison.Ordinal);
        Assert.Contains($"owner:       {completed.RunnerInstance} (pid {completed.ProcessId}, attempt 1)", stdout, StringComparison.Ordinal);

        (exit, stdout, _) = await Cli.RunAsync(env.Bus.Broker, "status", completed.InvocationId.ToString(), "--json");
        Assert.Equal(0, exit);
        Assert.Equal(completed.ProcessId, JsonDocument.Parse(stdout).RootElement.GetProperty("processId").GetInt32());
    }

    [Fact]
    public async Task Submit_count_prints_the_queue_time_and_the_run_time_apart_in_text_and_json()
    {
        await using var env = await RunnerEnvironment.StartAsync(broker, output, slots: 2);

        // 6 sleeps of 300 ms on 2 slots: three rounds, so the last ones wait about 600 ms for a slot.
        var (exit, stdout, stderr) = await Cli.RunAsync(env.Bus.Broker, "submit", "sleep", """{"ms":300}""", "--count", "6", "--json");
        output.WriteLine(stdout + stderr);
        Assert.Equal(0, exit);
        var summary = JsonDocument.Parse(stdout).RootElement;
        // The fields there were stay as they were.
        foreach (var field in new[] { "submitted", "completed", "succeeded", "failed", "elapsedSeconds", "perSecond", "latencyP50Ms", "latencyP99Ms" })
            Assert.True(summary.TryGetProperty(field, out _), field);
        var runP50 = summary.GetProperty("runP50Ms").GetDouble();
        var queuedP99 = summary.GetProperty("queuedP99Ms").GetDouble();
        Assert.InRange(runP50, 250, 3000); // a 300 ms sleep, timed from the worker's start to its end on other clocks: a few ms either way
        Assert.InRange(summary.GetProperty("runP99Ms").GetDouble(), runP50, 5000);
        Assert.InRange(summary.GetProperty("queuedP50Ms").GetDouble(), 0, queuedP99);
        Assert.True(queuedP99 >= 400, $"the last round waited for two runs of 300 ms, queued p99 {queuedP99} ms");
        Assert.True(summary.GetProperty("latencyP99Ms").GetDouble() >= queuedP99);

        (exit, stdout, _) = await Cli.RunAsync(env.Bus.Broker, "submit", "sleep", """{"ms":50}""", "--count", "4");
        output.WriteLine(stdout);
        Assert.Equal(0, exit);
        Assert.Contains("latency p50: ", stdout, StringComparison.Ordinal);
        Assert.Contains("queued (waiting for a slot)  p50: ", stdout, StringComparison.Ordinal);
        Assert.Contains("running (worker start to end)     p50: ", stdout, StringComparison.Ordinal);
    }

    static void CopyDirectory(string from, string to)
    {
        Directory.CreateDirectory(to);
        foreach (var file in Directory.EnumerateFiles(from, "*", SearchOption.AllDirectories))
        {
            var target = Path.Combine(to, Path.GetRelativePath(from, file));
            Directory.CreateDirectory(Path.GetDirectoryName(target)!);
            File.Copy(file, target);
            if (!OperatingSystem.IsWindows())
                File.SetUnixFileMode(target, File.GetUnixFileMode(file)); // the workers stay executable
        }
    }
}
