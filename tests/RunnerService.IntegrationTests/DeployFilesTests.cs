using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Serialization;
using System.Text.RegularExpressions;
using MassTransit;
using RunnerService.Contracts;
using RunnerService.IntegrationTests.Infrastructure;
using Xunit.Abstractions;

namespace RunnerService.IntegrationTests;

/// <summary>
/// The deploy files against what a live replica and the broker really expose: the metric and queue names of a run
/// are handed to <c>deploy/check-deploy-files.sh --names</c>, which checks every dashboard and alert query with them
/// (.ci/run calls the script without them, with names derived from the sources).
/// </summary>
[Collection(BrokerCollection.Name)]
[Trait("Category", "Integration")]
public sealed partial class DeployFilesTests(BrokerFixture broker, ITestOutputHelper output)
{
    static readonly TimeSpan Patience = TimeSpan.FromSeconds(60);

    [Fact]
    public async Task The_shipped_dashboard_and_alert_rules_pass_against_a_live_run_and_broken_copies_fail_with_a_clear_message()
    {
        var names = await LiveNamesAsync();
        var directory = Directory.CreateTempSubdirectory("deploy-names-").FullName;
        try
        {
            var namesFile = Path.Combine(directory, "names.json");
            await File.WriteAllTextAsync(namesFile, JsonSerializer.Serialize(names));

            var shipped = await RunCheckAsync("--names", namesFile);
            Assert.True(shipped.ExitCode == 0, shipped.Output);
            Assert.Contains(" 0 failed", shipped.Output, StringComparison.Ordinal);

            // A copy of the dashboard with a metric that does not exist and a queue that does not exist (the old panel's).
            var dashboard = await File.ReadAllTextAsync(Path.Combine(RepoPaths.Root, "deploy", "grafana", "dashboards", "runner.json"));
            Assert.Contains("runner_slots_busy{", dashboard, StringComparison.Ordinal);
            Assert.Contains("run-invocation|invocation-state|runner-instance-.*", dashboard, StringComparison.Ordinal);
            var broken = dashboard.Replace("runner_slots_busy{", "runner_slots_occupied{", StringComparison.Ordinal)
                .Replace("run-invocation|invocation-state|runner-instance-.*", "run-invocation|resume-invocation.*", StringComparison.Ordinal);
            var brokenFile = Path.Combine(directory, "broken-dashboard.json");
            await File.WriteAllTextAsync(brokenFile, broken);
            var failed = await RunCheckAsync("--names", namesFile, "--dashboard", brokenFile);
            Assert.Equal(1, failed.ExitCode);
            Assert.Contains("FAIL: " + brokenFile + ": panel 'Slots busy vs total': queries metric runner_slots_occupied, which the service does not expose (live run)", failed.Output, StringComparison.Ordinal);
            Assert.Contains("queue 'resume-invocation.*' matches no queue the service declares", failed.Output, StringComparison.Ordinal);

            // A broker metric that RabbitMQ does not have is caught too, when the broker's metrics were read.
            if (names.BrokerMetrics is not null)
            {
                var brokerBroken = dashboard.Replace("rabbitmq_detailed_queue_consumers{", "rabbitmq_detailed_queue_consumer_count{", StringComparison.Ordinal);
                await File.WriteAllTextAsync(brokenFile, brokerBroken);
                var failedBroker = await RunCheckAsync("--names", namesFile, "--dashboard", brokenFile);
                Assert.Equal(1, failedBroker.ExitCode);
                Assert.Contains("queries metric rabbitmq_detailed_queue_consumer_count, which RabbitMQ's prometheus plugin does not expose (live run)", failedBroker.Output, StringComparison.Ordinal);
            }

            // And an alert rule on a metric the service does not have.
            var rules = await File.ReadAllTextAsync(Path.Combine(RepoPaths.Root, "deploy", "prometheus", "alerts.yml"));
            Assert.Contains("runner_messages_poison_total{", rules, StringComparison.Ordinal);
            var brokenRules = Path.Combine(directory, "broken-alerts.yml");
            await File.WriteAllTextAsync(brokenRules, rules.Replace("runner_messages_poison_total{", "runner_poison_messages_total{", StringComparison.Ordinal));
            var failedRules = await RunCheckAsync("--names", namesFile, "--rules", brokenRules);
            Assert.Equal(1, failedRules.ExitCode);
            Assert.Contains("alert RunnerPoisonMessages: queries metric runner_poison_messages_total, which the service does not expose", failedRules.Output, StringComparison.Ordinal);
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }

    [Fact]
    public async Task Create_users_gives_the_runner_full_rights_and_keda_the_management_tag_that_reads_queue_depth()
    {
        await using var vhost = await broker.CreateVirtualHostAsync("createusers");
        var suffix = Guid.NewGuid().ToString("N")[..8];
        var (runnerUser, kedaUser) = ($"runner-{suffix}", $"keda-{suffix}");
        try
        {
            var admin = broker.ManagementUri;
            var start = new ProcessStartInfo("bash") { RedirectStandardOutput = true, RedirectStandardError = true };
            start.ArgumentList.Add(Path.Combine(RepoPaths.Root, "deploy", "k8s", "rabbitmq", "create-users.sh"));
            start.ArgumentList.Add(vhost.Name);
            start.Environment["RABBITMQ_ADMIN_URL"] = new UriBuilder(admin) { Path = "" }.Uri.ToString().TrimEnd('/');
            start.Environment["RUNNER_USER"] = runnerUser;
            start.Environment["KEDA_USER"] = kedaUser;
            start.Environment["RUNNER_PASSWORD"] = "runner-pw";
            start.Environment["KEDA_PASSWORD"] = "keda-pw";
            using (var process = Process.Start(start)!)
            {
                var text = await process.StandardOutput.ReadToEndAsync() + await process.StandardError.ReadToEndAsync();
                await process.WaitForExitAsync();
                output.WriteLine(text);
                Assert.True(process.ExitCode == 0, text);
            }

            // The runner's user declares what MassTransit needs (a bus on the vhost starts and runs an invocation).
            var runnerUri = new UriBuilder(vhost.AmqpUri) { UserName = runnerUser, Password = "runner-pw" }.Uri;
            await using (var bus = await TestBus.StartAsync(runnerUri))
                await bus.Client.SubmitAsync(new RunInvocation { InvocationId = NewId.NextGuid(), TaskName = "echo", Arguments = Json.Parse("{}") });
            await broker.DeclareQueueAsync(vhost.Name, "run-invocation");

            // KEDA's protocol: http reads the queue's depth through the management API.
            using var keda = new HttpClient { BaseAddress = new Uri(admin.GetLeftPart(UriPartial.Authority)) };
            keda.DefaultRequestHeaders.Authorization = new("Basic", Convert.ToBase64String(System.Text.Encoding.UTF8.GetBytes($"{kedaUser}:keda-pw")));
            using var response = await keda.GetAsync($"api/queues/{Uri.EscapeDataString(vhost.Name)}/run-invocation");
            var body = await response.Content.ReadAsStringAsync();
            Assert.True(response.IsSuccessStatusCode, body);
            using var queue = JsonDocument.Parse(body);
            Assert.Equal("run-invocation", queue.RootElement.GetProperty("name").GetString());

            // Without the management tag the same request is refused: the tag is what KEDA needs.
            using (var untag = new StringContent("{\"password\":\"keda-pw\",\"tags\":\"\"}", System.Text.Encoding.UTF8, "application/json"))
                await broker.PutUserAsync(kedaUser, untag);
            using var refused = await keda.GetAsync($"api/queues/{Uri.EscapeDataString(vhost.Name)}/run-invocation");
            Assert.Equal(System.Net.HttpStatusCode.Unauthorized, refused.StatusCode);
        }
        finally
        {
            await broker.DeleteUserAsync(runnerUser);
            await broker.DeleteUserAsync(kedaUser);
        }
    }

    /// <summary>Names a live replica and its broker expose, in the form <c>check-deploy-files.sh --names</c> reads.</summary>
    async Task<LiveNames> LiveNamesAsync()
    {
        await using var env = await RunnerEnvironment.StartAsync(broker, output, slots: 1);
        // A run with a wait (fib: a parent and its children) and a poison message: the error queue exists, every instrument has a series.
        var runs = new[]
        {
            env.Bus.Client.RunAsync("fib", Json.Parse("{\"n\":2}")),
            env.Bus.Client.RunAsync(new RunInvocation { InvocationId = NewId.NextGuid(), TaskName = "" }),
        };
        await Task.WhenAll(runs).WaitAsync(Patience);
        var metrics = await MetricsText.ScrapeAsync(env.Runner.HttpBase);

        var serviceMetrics = new SortedSet<string>(StringComparer.Ordinal);
        foreach (var (family, type) in metrics.Families)
        {
            serviceMetrics.Add(family);
            if (type is "histogram" or "summary")
                serviceMetrics.UnionWith(new[] { "_bucket", "_sum", "_count" }.Select(s => family + s));
        }
        var labels = new SortedSet<string>(LabelName().Matches(metrics.Text).Select(m => m.Groups[1].Value), StringComparer.Ordinal);
        var queues = await TestBus.PollAsync(async () =>
        {
            var q = await broker.QueueNamesAsync(env.VirtualHost.Name);
            return q.Any(n => n.EndsWith("_error", StringComparison.Ordinal)) ? q : null;
        }, TimeSpan.FromSeconds(20), "the error queue of the poison message");
        output.WriteLine("queues: " + string.Join(", ", queues));

        var brokerMetrics = await BrokerMetricsAsync();
        return new LiveNames([.. serviceMetrics], [.. labels], brokerMetrics, [.. queues]);
    }

    /// <summary>
    /// The metric names of RabbitMQ's prometheus plugin (aggregated and the per-queue families the scrape configs ask
    /// for): <c>RABBITMQ_PROMETHEUS_URL</c>, else the management port + 1000 (deploy/local/rabbitmq.sh). Null when
    /// the plugin does not answer: the broker's names are then not checked, and the test says so.
    /// </summary>
    async Task<List<string>?> BrokerMetricsAsync()
    {
        var configured = Environment.GetEnvironmentVariable("RABBITMQ_PROMETHEUS_URL");
        var baseUri = !string.IsNullOrWhiteSpace(configured)
            ? new Uri(configured)
            : new UriBuilder(broker.ManagementUri) { Port = broker.ManagementUri.Port + 1000, UserName = "", Password = "", Path = "/" }.Uri;
        using var http = new HttpClient { BaseAddress = baseUri, Timeout = TimeSpan.FromSeconds(10) };
        try
        {
            var names = new SortedSet<string>(StringComparer.Ordinal);
            foreach (var path in new[] { "metrics", "metrics/detailed?family=queue_coarse_metrics&family=queue_consumer_count" })
            {
                var text = await http.GetStringAsync(path);
                foreach (Match m in TypeLine().Matches(text))
                {
                    names.Add(m.Groups[1].Value);
                    if (m.Groups[2].Value is "histogram" or "summary")
                        names.UnionWith(new[] { "_bucket", "_sum", "_count" }.Select(s => m.Groups[1].Value + s));
                }
            }
            return [.. names];
        }
        catch (HttpRequestException e)
        {
            output.WriteLine($"RabbitMQ's prometheus plugin does not answer at {baseUri} ({e.Message}): broker metric names are not checked");
            return null;
        }
    }

    /// <summary>The JSON check-deploy-files.sh reads.</summary>
    sealed record LiveNames(
        [property: JsonPropertyName("service_metrics")] List<string> ServiceMetrics,
        [property: JsonPropertyName("service_labels")] List<string> ServiceLabels,
        [property: JsonPropertyName("broker_metrics")] List<string>? BrokerMetrics,
        [property: JsonPropertyName("queues")] List<string> Queues);

    static async Task<(int ExitCode, string Output)> RunCheckAsync(params string[] arguments)
    {
        var start = new ProcessStartInfo("bash") { RedirectStandardOutput = true, RedirectStandardError = true };
        start.ArgumentList.Add(Path.Combine(RepoPaths.Root, "deploy", "check-deploy-files.sh"));
        foreach (var argument in arguments)
            start.ArgumentList.Add(argument);
        using var process = Process.Start(start)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        await process.WaitForExitAsync().WaitAsync(TimeSpan.FromMinutes(2));
        return (process.ExitCode, await stdout + await stderr);
    }

    [GeneratedRegex(@"^# TYPE (\S+) (\S+)", RegexOptions.Multiline)]
    private static partial Regex TypeLine();

    [GeneratedRegex(@"[{,]([a-zA-Z_][a-zA-Z0-9_]*)=""")]
    private static partial Regex LabelName();
}
