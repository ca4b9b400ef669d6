using System.Diagnostics;
using System.Net;
using System.Text.Json;
using System.Text.RegularExpressions;
using MassTransit;
using RunnerService.Contracts;
using RunnerService.IntegrationTests.Infrastructure;
using Xunit.Abstractions;

namespace RunnerService.IntegrationTests;

/// <summary>
/// Metrics, dashboard and health of a runner process. The service runs as its own process, so the tests read its
/// meter through the loopback <c>/metrics</c> endpoint (the same instruments the OpenTelemetry exporters see,
/// named as the Collector's Prometheus exporter names them).
/// </summary>
[Collection(BrokerCollection.Name)]
[Trait("Category", "Observability")]
public sealed partial class ObservabilityTests(BrokerFixture broker, ITestOutputHelper output)
{
    static readonly TimeSpan Patience = TimeSpan.FromSeconds(60);

    [Fact]
    public async Task Metrics_count_exactly_a_known_workload_by_task_and_status()
    {
        const int slots = 3;
        await using var env = await RunnerEnvironment.StartAsync(broker, output, slots);

        var runs = new List<Task<InvocationCompleted>>();
        runs.AddRange(Enumerable.Range(0, 10).Select(i => env.Bus.Client.RunAsync("echo", Json.Parse($"{{\"i\":{i}}}"))));
        runs.AddRange(Enumerable.Range(0, 2).Select(_ => env.Bus.Client.RunAsync("fail", Json.Parse("{\"message\":\"planned\"}"))));
        runs.Add(env.Bus.Client.RunAsync("crash", Json.Parse("{\"exitCode\":3}")));
        runs.Add(env.Bus.Client.RunAsync("fib", Json.Parse("{\"n\":2}"))); // a parent that waits for two children
        runs.Add(env.Bus.Client.RunAsync(new RunInvocation { InvocationId = NewId.NextGuid(), TaskName = "" })); // poison
        var completions = await Task.WhenAll(runs).WaitAsync(Patience);
        Assert.Equal(10, completions.Count(c => c.TaskName == "echo" && c.Status == InvocationStatus.Succeeded));
        Assert.Equal(1, completions.Single(c => c.TaskName == "fib").Result!.Value.GetInt32());

        // Worker exits are counted when the process is reaped, which may trail the completion by a moment.
        var metrics = await TestBus.PollAsync(async () =>
        {
            var m = await MetricsText.ScrapeAsync(env.Runner.HttpBase);
            return m.Sum("runner_worker_exits_total") >= 16 ? m : null;
        }, TimeSpan.FromSeconds(10), "16 worker exits in /metrics");
        output.WriteLine(metrics.Text);

        const string started = "runner_invocations_started_total";
        const string completed = "runner_invocations_completed_total";
        Assert.Equal(10, metrics.Value(started, ("task", "echo")));
        Assert.Equal(2, metrics.Value(started, ("task", "fail")));
        Assert.Equal(1, metrics.Value(started, ("task", "crash")));
        Assert.Equal(3, metrics.Value(started, ("task", "fib")));
        Assert.Equal(16, metrics.Sum(started));

        Assert.Equal(10, metrics.Value(completed, ("task", "echo"), ("status", "succeeded")));
        Assert.Equal(2, metrics.Value(completed, ("task", "fail"), ("status", "failed")));
        Assert.Equal(1, metrics.Value(completed, ("task", "crash"), ("status", "failed")));
        Assert.Equal(3, metrics.Value(completed, ("task", "fib"), ("status", "succeeded")));
        Assert.Equal(1, metrics.Value(completed, ("task", "other"), ("status", "failed"))); // the rejected message: no valid name, so no label of its own
        Assert.Equal(17, metrics.Sum(completed));

        // Histograms: one run time per completion that ran, one queue time per start, one paused time per resume.
        Assert.Equal(10, metrics.Value("runner_invocation_run_time_seconds_count", ("task", "echo"), ("status", "succeeded")));
        Assert.Equal(10, metrics.Sum("runner_invocation_run_time_seconds_bucket", ("task", "echo"), ("status", "succeeded"), ("le", "+Inf")));
        Assert.Equal(16, metrics.Sum("runner_invocation_run_time_seconds_count")); // the rejected message never ran
        Assert.Equal(16, metrics.Sum("runner_invocation_queue_time_seconds_count"));
        Assert.Equal(3, metrics.Value("runner_invocation_queue_time_seconds_count", ("task", "fib")));
        Assert.Equal(1, metrics.Value("runner_invocation_paused_time_seconds_count", ("task", "fib")));
        Assert.True(metrics.Value("runner_invocation_paused_time_seconds_sum", ("task", "fib")) > 0);
        Assert.Equal(16, metrics.Value("runner_worker_spawn_time_seconds_count"));
        Assert.True(metrics.Value("runner_worker_spawn_time_seconds_sum") > 0);

        Assert.Equal(15, metrics.Value("runner_worker_exits_total", ("exit", "0")));
        Assert.Equal(1, metrics.Value("runner_worker_exits_total", ("exit", "3")));
        Assert.Equal(1, metrics.Value("runner_messages_poison_total", ("reason", "invalid")));
        Assert.Equal(0, metrics.Sum("runner_recoveries_total"));

        Assert.Equal(slots, metrics.Value("runner_slots_total"));
        Assert.Equal(0, metrics.Value("runner_slots_busy"));
        Assert.Equal(0, metrics.Value("runner_workers_paused"));
        Assert.Equal(0, metrics.Value("runner_workers_alive"));
    }

    [Fact]
    public async Task Paused_gauge_counts_a_waiting_worker_and_frees_its_slot()
    {
        await using var env = await RunnerEnvironment.StartAsync(broker, output, slots: 1);
        var dependency = NewId.NextGuid();
        var waiter = env.Bus.Client.RunAsync("wait_for", Json.Parse($"{{\"invocationId\":\"{dependency}\"}}"));
        await TestBus.PollAsync(() => env.Bus.Waiting.FirstOrDefault(w => w.WaitingFor.Contains(dependency)), Patience, "the waiter's wait");

        var metrics = await TestBus.PollAsync(async () =>
        {
            var m = await MetricsText.ScrapeAsync(env.Runner.HttpBase);
            return m.Value("runner_workers_paused") == 1 ? m : null;
        }, TimeSpan.FromSeconds(10), "one paused worker in /metrics");
        Assert.Equal(0, metrics.Value("runner_slots_busy"));
        Assert.Equal(1, metrics.Value("runner_workers_alive"));

        await env.Bus.Client.SubmitAsync(new RunInvocation { InvocationId = dependency, TaskName = "echo", Arguments = Json.Parse("{}") });
        Assert.Equal(InvocationStatus.Succeeded, (await waiter.WaitAsync(Patience)).Status);
        var after = await MetricsText.ScrapeAsync(env.Runner.HttpBase);
        Assert.Equal(0, after.Value("runner_workers_paused"));
        Assert.Equal(1, after.Value("runner_invocation_paused_time_seconds_count", ("task", "wait_for")));
    }

    [Fact]
    public async Task Every_metric_the_dashboard_queries_is_emitted_by_the_service_or_by_RabbitMQ()
    {
        await using var env = await RunnerEnvironment.StartAsync(broker, output, slots: 1);
        var metrics = await MetricsText.ScrapeAsync(env.Runner.HttpBase);

        var path = Path.Combine(RepoPaths.Root, "deploy", "grafana", "dashboards", "runner.json");
        using var dashboard = JsonDocument.Parse(await File.ReadAllTextAsync(path));
        var expressions = new List<string>();
        CollectExpressions(dashboard.RootElement, expressions);
        Assert.NotEmpty(expressions);

        var queried = expressions.SelectMany(e => MetricSelector().Matches(e).Select(m => m.Groups[1].Value)).Distinct().ToList();
        output.WriteLine(string.Join('\n', queried));
        Assert.Contains(queried, q => q.StartsWith("runner_", StringComparison.Ordinal));
        Assert.Contains(queried, q => q.StartsWith("rabbitmq_", StringComparison.Ordinal));
        foreach (var name in queried)
        {
            if (name.StartsWith("rabbitmq_", StringComparison.Ordinal))
                continue; // RabbitMQ's own Prometheus plugin, scraped directly
            var family = HistogramSuffix().Replace(name, "");
            Assert.True(metrics.Families.ContainsKey(family), $"the dashboard queries {name}, which the service does not emit");
            if (family != name)
                Assert.Equal("histogram", metrics.Families[family]);
        }
    }

    [Fact]
    public async Task Ready_fails_while_the_broker_is_stopped_and_recovers_when_it_is_back()
    {
        await using var privateBroker = await PrivateBroker.StartAsync(5802);
        await using var env = await RunnerEnvironment.StartAsync(broker, output, slots: 1, brokerOverride: privateBroker.AmqpUri);
        env.VerifySagasOnDispose = false;
        Assert.True(await env.Runner.IsReadyAsync());
        using var http = new HttpClient { BaseAddress = env.Runner.HttpBase, Timeout = TimeSpan.FromSeconds(10) };

        await privateBroker.StopAsync();
        await TestBus.PollAsync(async () => await env.Runner.IsReadyAsync() ? null : "not ready", TimeSpan.FromSeconds(30), "/health/ready to fail");
        using (var response = await http.GetAsync("health/ready"))
            Assert.Equal(HttpStatusCode.ServiceUnavailable, response.StatusCode);
        using (var live = await http.GetAsync("health/live"))
            Assert.Equal(HttpStatusCode.OK, live.StatusCode);

        await privateBroker.StartAgainAsync();
        await TestBus.PollAsync(async () => await env.Runner.IsReadyAsync() ? "ready" : null, TimeSpan.FromSeconds(60), "/health/ready to recover");
        Assert.False(env.Runner.HasExited);
    }

    [Fact]
    public async Task One_fib_4_is_one_trace_from_the_publisher_through_the_runner_into_every_worker_process()
    {
        // The test is the publishing service: its root span and MassTransit's publish span start the trace.
        using var listener = new ActivityListener
        {
            ShouldListenTo = s => s.Name is "MassTransit" or TestSourceName,
            Sample = (ref ActivityCreationOptions<ActivityContext> _) => ActivitySamplingResult.AllDataAndRecorded,
        };
        ActivitySource.AddActivityListener(listener);
        using var source = new ActivitySource(TestSourceName);
        // The runner prints its spans with the console exporter; it runs as its own process, so the test reads them there.
        // Workers export their own spans as OTLP/HTTP JSON; this receiver stands in for the collector.
        using var collector = new OtlpJsonReceiver();
        await using var env = await RunnerEnvironment.StartAsync(broker, output, slots: 2, new Dictionary<string, string>
        {
            ["Runner__ConsoleTelemetry"] = "true",
            ["Runner__WorkerEnvironment__OTEL_EXPORTER_OTLP_ENDPOINT"] = collector.Endpoint.ToString(),
            // The export budget (500 ms by default) also covers a JIT-compiled worker compiling its HTTP stack and this
            // in-process receiver answering; on a busy test machine that can take longer, and this test wants every span.
            ["Runner__WorkerEnvironment__OTEL_EXPORTER_OTLP_TIMEOUT"] = "5000",
        });

        string traceId;
        InvocationCompleted done;
        using (var root = source.StartActivity("submit fib"))
        {
            traceId = root!.TraceId.ToHexString();
            done = await env.Bus.Client.RunAsync("fib", Json.Parse("{\"n\":4}")).WaitAsync(Patience);
        }
        Assert.Equal(InvocationStatus.Succeeded, done.Status);

        var spans = await TestBus.PollAsync(() =>
        {
            var parsed = ConsoleSpan.Parse(env.Runner.Output);
            return parsed.Count(s => s.Name == "run fib") >= 9 && parsed.Count(s => s.Name == "resume fib") >= 4 ? parsed : null;
        }, TimeSpan.FromSeconds(20), "the runner's run spans in its console output");
        var ours = spans.Where(s => s.Source == "RunnerService").ToList();
        foreach (var span in ours)
            output.WriteLine($"{span.TraceId} {span.SpanId} <- {span.ParentSpanId} {span.Name} {span.Fields.GetValueOrDefault("runner.invocation.id")}");
        Assert.All(ours, s => Assert.Equal(traceId, s.TraceId));
        Assert.Equal(9, ours.Count(s => s.Name == "run fib")); // fib(4) is 9 invocations
        Assert.Equal(4, ours.Count(s => s.Name == "resume fib")); // 4 of them wait for two children

        var byId = spans.GroupBy(s => s.SpanId).ToDictionary(g => g.Key, g => g.First());
        var parentRun = Assert.Single(ours, s => s.Name == "run fib" && s.Fields.GetValueOrDefault("runner.invocation.id") == done.InvocationId.ToString());
        Assert.Equal("rabbitmq", parentRun.Fields.GetValueOrDefault("messaging.system"));
        Assert.Equal("run-invocation", parentRun.Fields.GetValueOrDefault("messaging.destination.name"));
        var spawns = ours.Where(s => s.Name == "spawn worker").ToList();
        Assert.Equal(9, spawns.Count);
        Assert.All(spawns, s => Assert.Equal("run fib", byId[s.ParentSpanId!].Name));
        // Spans created inside the worker processes: one per invocation, same trace, child of that invocation's run span,
        // exported from the worker's own pid.
        var workerSpans = await TestBus.PollAsync(() => collector.Spans.Count >= 9 ? collector.Spans.ToArray() : null, TimeSpan.FromSeconds(20), "nine worker spans");
        foreach (var span in workerSpans)
            output.WriteLine($"worker span {span.TraceId} {span.SpanId} <- {span.ParentSpanId} {span.Name} pid {span.ProcessId}");
        Assert.All(workerSpans, w =>
        {
            Assert.Equal("/v1/traces", w.Path);
            Assert.Equal("task fib", w.Name);
            Assert.Equal(traceId, w.TraceId);
            var run = Assert.Single(ours, s => s.SpanId == w.ParentSpanId);
            Assert.Equal("run fib", run.Name);
            Assert.Equal(run.Fields.GetValueOrDefault("runner.invocation.id"), w.Attributes["runner.invocation.id"]);
        });
        Assert.Contains(workerSpans, w => w.Attributes["runner.invocation.id"] == done.InvocationId.ToString() && w.ProcessId == done.ProcessId);

        // Each child's run span descends (through MassTransit's publish and consume spans) from the parent's run span.
        foreach (var child in ours.Where(s => s.Name == "run fib" && s != parentRun))
        {
            var ancestor = child.ParentSpanId;
            var hops = 0;
            while (ancestor is not null && ancestor != parentRun.SpanId && byId.TryGetValue(ancestor, out var up) && hops++ < 100)
                ancestor = up.ParentSpanId;
            Assert.Equal(parentRun.SpanId, ancestor);
        }
    }

    [Theory]
    [InlineData("closed", 1)]
    [InlineData("closed", 10)] // reuse mode: the next invocation follows in the same process right after a result
    [InlineData("silent", 1)]
    [InlineData("silent", 10)]
    public async Task An_unreachable_collector_adds_nothing_to_the_run_time_of_a_worker_task(string collector, int invocationsPerProcess)
    {
        // "closed": nothing listens on the port, a connection is refused. "silent": a collector that takes the
        // connection and never answers, so the worker's export runs into its time limit.
        using var listener = new System.Net.Sockets.TcpListener(IPAddress.Loopback, 0);
        listener.Start(); // never accepts: the kernel completes the handshakes, nobody reads a request
        var port = ((IPEndPoint)listener.LocalEndpoint).Port;
        if (collector == "closed")
            listener.Stop();

        // Both runners trace (so workers get a traceparent and would export); only one gives its workers an OTLP
        // endpoint. A warm worker per runner keeps process start-up out of the run time.
        var traced = new Dictionary<string, string>
        {
            ["Runner__ConsoleTelemetry"] = "true",
            ["Runner__WarmWorkers"] = "1",
            ["Runner__MaxInvocationsPerProcess"] = invocationsPerProcess.ToString(System.Globalization.CultureInfo.InvariantCulture),
        };
        var unreachable = new Dictionary<string, string>(traced)
        {
            ["Runner__WorkerEnvironment__OTEL_EXPORTER_OTLP_ENDPOINT"] = $"http://127.0.0.1:{port}",
        };
        await using var plain = await RunnerEnvironment.StartAsync(broker, output, slots: 1, traced);
        await using var exporting = await RunnerEnvironment.StartAsync(broker, output, slots: 1, unreachable);

        // One echo at a time, alternating which runner goes first: two runs at once would fight for the cores and vary
        // far more than the 20 ms looked for. With a process per invocation each run waits for a quiet runner (its
        // slot free, as a worker exits after its export, and its warm worker started: one starts when the last is
        // taken). In reuse mode runs follow at once, so a slow export is still under way during the next invocation.
        const int runs = 10;
        var reuse = invocationsPerProcess > 1;
        var without = new List<TimeSpan>();
        var with = new List<TimeSpan>();
        for (var i = 0; i < runs; i++)
        {
            if (i % 2 == 0)
            {
                without.Add(await RunEchoAsync(plain, i, reuse));
                with.Add(await RunEchoAsync(exporting, i, reuse));
            }
            else
            {
                with.Add(await RunEchoAsync(exporting, i, reuse));
                without.Add(await RunEchoAsync(plain, i, reuse));
            }
        }
        var added = Median(with) - Median(without);
        output.WriteLine($"run time without endpoint: median {Ms(Median(without))} ms [{string.Join(", ", without.Select(Ms))}]");
        output.WriteLine($"run time with {collector} endpoint: median {Ms(Median(with))} ms [{string.Join(", ", with.Select(Ms))}]");

        // The workers did try to export (a worker without a traceparent would skip it and prove nothing).
        await TestBus.PollAsync(() => exporting.Runner.Output.Contains($"trace export to http://127.0.0.1:{port}/v1/traces failed", StringComparison.Ordinal) ? "seen" : null,
            TimeSpan.FromSeconds(10), "the worker's failed-export line in the runner's log");
        Assert.True(added <= TimeSpan.FromMilliseconds(20), $"an unreachable collector added {Ms(added)} ms to the median run time");
    }

    static async Task<TimeSpan> RunEchoAsync(RunnerEnvironment env, int i, bool reuse)
    {
        if (!reuse)
        {
            await env.Runner.GetSettledStatusAsync(idleWorkers: 1);
            await Task.Delay(300);
        }
        var done = await env.Bus.Client.RunAsync("echo", Json.Parse($"{{\"i\":{i}}}")).WaitAsync(Patience);
        Assert.Equal(InvocationStatus.Succeeded, done.Status);
        return done.RunFor;
    }

    static string Ms(TimeSpan t) => t.TotalMilliseconds.ToString("F1", System.Globalization.CultureInfo.InvariantCulture);

    static TimeSpan Median(List<TimeSpan> values)
    {
        var sorted = values.Order().ToArray();
        return sorted.Length % 2 == 1 ? sorted[sorted.Length / 2] : (sorted[sorted.Length / 2 - 1] + sorted[sorted.Length / 2]) / 2;
    }

    const string TestSourceName = "RunnerService.IntegrationTests";

    static void CollectExpressions(JsonElement element, List<string> expressions)
    {
        switch (element.ValueKind)
        {
            case JsonValueKind.Object:
                foreach (var property in element.EnumerateObject())
                {
                    if (property.Name == "expr" && property.Value.ValueKind == JsonValueKind.String)
                        expressions.Add(property.Value.GetString()!);
                    else
                        CollectExpressions(property.Value, expressions);
                }
                break;
            case JsonValueKind.Array:
                foreach (var item in element.EnumerateArray())
                    CollectExpressions(item, expressions);
                break;
        }
    }

    /// <summary>A metric name in PromQL: followed by a label matcher or a range (the dashboard always writes one).</summary>
    [GeneratedRegex(@"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*[\{\[]")]
    private static partial Regex MetricSelector();

    [GeneratedRegex("_(bucket|sum|count)$")]
    private static partial Regex HistogramSuffix();
}
