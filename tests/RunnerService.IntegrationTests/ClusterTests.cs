using System.Globalization;
using System.Text;
using RabbitMQ.Client;
using RunnerService.Contracts;
using RunnerService.IntegrationTests.Infrastructure;
using RunnerService.TestSupport;
using Xunit.Abstractions;

namespace RunnerService.IntegrationTests;

/// <summary>
/// The service on a real 3-node RabbitMQ cluster (deploy/local/rabbitmq-cluster.sh), replicas as separate processes,
/// one PostgreSQL saga store: queue types, bad input and the loss of a broker node mid-run.
/// </summary>
[Collection(BrokerCollection.Name)]
[Trait("Category", "Scale")]
public sealed class ClusterTests(BrokerFixture broker, PostgresFixture postgres, ClusterBroker cluster, ITestOutputHelper output)
    : IClassFixture<ClusterBroker>, IAsyncLifetime
{
    static readonly TimeSpan Patience = TimeSpan.FromMinutes(5);

    public Task InitializeAsync() => cluster.HealAsync();

    public Task DisposeAsync() => cluster.HealAsync();

    async Task<Dictionary<string, string>> SettingsAsync(string testName, string virtualHost) => new()
    {
        ["ConnectionStrings__RabbitMq"] = ClusterBroker.ConnectionString(virtualHost),
        ["ConnectionStrings__Sagas"] = await postgres.GetConnectionStringAsync(),
        ["Runner__SagaSchema"] = postgres.NewSchema($"t_{testName}"),
    };

    [Fact]
    public async Task On_a_cluster_every_durable_queue_is_a_quorum_queue_and_bad_input_still_reaches_the_error_queue()
    {
        var vhost = await cluster.CreateVirtualHostAsync("types");
        // No Runner:QuorumQueues: a connection string with several nodes chooses quorum queues.
        await using var env = await RunnerEnvironment.StartAsync(broker, output, slots: 1, await SettingsAsync("types", vhost),
            brokerOverride: ClusterBroker.NodeUri(1, vhost));
        var done = await env.Bus.Client.RunAsync("upper", Json.Parse("{\"text\":\"quorum\"}")).WaitAsync(Patience);
        Assert.Equal("QUORUM", done.Result!.Value.GetString());

        // A raw message without a task name: rejected, moved to the error queue (declared as a quorum queue both by the
        // dead-letter binding and by MassTransit's error transport: the two declarations must agree).
        var invalid = Guid.NewGuid();
        await env.Bus.PublishRawAsync("run-invocation", Encoding.UTF8.GetBytes($"{{\"invocationId\":\"{invalid}\"}}"), "application/json");
        var faulted = await TestBus.PollAsync(async () => await env.Bus.GetAsync("run-invocation_error"), Patience, "the invalid message in the error queue");
        Assert.Contains(invalid.ToString(), Encoding.UTF8.GetString(faulted.Body.Span), StringComparison.Ordinal);
        var reason = Encoding.UTF8.GetString((byte[])faulted.BasicProperties.Headers!["MT-Fault-Message"]!);
        Assert.Contains("TaskName is missing", reason, StringComparison.Ordinal);

        var instance = (await env.Runner.GetStatusAsync()).Instance;
        foreach (var queue in new[] { "run-invocation", "invocation-state", $"runner-instance-{instance}", "run-invocation_error" })
        {
            var info = await cluster.QueueAsync(vhost, queue);
            Assert.Equal("quorum", info.GetProperty("type").GetString());
            // The limit and the dead-letter route on the queues of work; an error queue keeps what it holds.
            var arguments = info.GetProperty("arguments");
            if (queue.EndsWith("_error", StringComparison.Ordinal))
            {
                Assert.False(arguments.TryGetProperty("x-delivery-limit", out _));
                Assert.False(arguments.TryGetProperty("x-dead-letter-exchange", out _));
            }
            else
            {
                Assert.Equal(20, arguments.GetProperty("x-delivery-limit").GetInt32());
                Assert.Equal($"{queue}_error", arguments.GetProperty("x-dead-letter-exchange").GetString());
            }
            output.WriteLine($"{queue}: quorum, leader {info.GetProperty("leader").GetString()}, members {info.GetProperty("members").GetArrayLength()}");
            Assert.Equal(ClusterBroker.Nodes, info.GetProperty("members").GetArrayLength());
        }
        // One rule for all: every durable queue is a quorum queue; what stays classic is transient (gone with its node
        // or its replica: the heartbeat queue and MassTransit's bus queue).
        foreach (var name in await cluster.QueueNamesAsync(vhost))
        {
            var info = await cluster.QueueAsync(vhost, name);
            var type = info.GetProperty("type").GetString();
            output.WriteLine($"{name}: {type}, durable {info.GetProperty("durable")}");
            Assert.True(info.GetProperty("durable").GetBoolean() ? type == "quorum" : type == "classic", $"{name}: durable {info.GetProperty("durable")}, {type}");
        }
        Assert.Equal("classic", (await cluster.QueueAsync(vhost, $"runner-heartbeats-{instance}")).GetProperty("type").GetString());
    }

    [Fact]
    public async Task A_message_returned_more_often_than_the_delivery_limit_is_moved_to_the_error_queue_not_lost()
    {
        var vhost = await cluster.CreateVirtualHostAsync("limit");
        var settings = await SettingsAsync("limit", vhost);
        settings["Runner__DeliveryLimit"] = "2";
        await using (var env = await RunnerEnvironment.StartAsync(broker, output, slots: 1, settings, brokerOverride: ClusterBroker.NodeUri(1, vhost)))
        {
            // The replica declared the queues; it stops before the message comes, so only this test's consumer sees it.
        }

        var factory = new ConnectionFactory { Uri = ClusterBroker.NodeUri(2, vhost) };
        await using var connection = await factory.CreateConnectionAsync();
        // Confirms: the publish returns once the quorum queue has the message.
        await using var channel = await connection.CreateChannelAsync(new CreateChannelOptions(publisherConfirmationsEnabled: true, publisherConfirmationTrackingEnabled: true));
        var id = Guid.NewGuid();
        var body = Encoding.UTF8.GetBytes($"{{\"invocationId\":\"{id}\",\"taskName\":\"echo\",\"arguments\":{{}}}}");
        await channel.BasicPublishAsync("run-invocation", "", false, new BasicProperties { ContentType = "application/json", Persistent = true }, body);
        // A consumer that takes the message and gives it back, as a replica that dies with it would, until the broker
        // moves it away (a requeue reaches the queue asynchronously: an empty get is retried).
        var returned = 0;
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        while (DateTime.UtcNow < deadline && returned <= 10)
        {
            var got = await channel.BasicGetAsync("run-invocation", autoAck: false);
            if (got is not null)
            {
                returned++;
                await channel.BasicNackAsync(got.DeliveryTag, multiple: false, requeue: true);
            }
            else if (await channel.MessageCountAsync("run-invocation_error") > 0)
            {
                break;
            }
            else
            {
                await Task.Delay(50);
            }
        }
        output.WriteLine($"returned {returned} times");
        Assert.Equal(3, returned); // the first delivery and 2 more: the limit
        var dead = await TestBus.PollAsync(async () => await channel.BasicGetAsync("run-invocation_error", autoAck: true), Patience, "the message in the error queue");
        Assert.Contains(id.ToString(), Encoding.UTF8.GetString(dead.Body.Span), StringComparison.Ordinal);
    }

    [Fact]
    public async Task SIGKILL_of_a_broker_node_mid_run_loses_nothing_and_its_replica_finishes_through_the_other_nodes()
    {
        var vhost = await cluster.CreateVirtualHostAsync("kill");
        var settings = await SettingsAsync("kill", vhost);
        var markers = Path.Combine(Path.GetTempPath(), $"cluster-markers-{Guid.NewGuid():N}.txt");
        settings["Runner__WorkerEnvironment__RUNNER_MARKER_FILE"] = markers;
        await using var env = await RunnerEnvironment.StartAsync(broker, output, slots: 2, settings, runners: 0, brokerOverride: ClusterBroker.NodeUri(1, vhost));
        // Replica k connects first to node k (the test's own bus uses node 1).
        var instances = new string[ClusterBroker.Nodes];
        for (var node = 1; node <= ClusterBroker.Nodes; node++)
        {
            var own = new Dictionary<string, string>(settings) { ["ConnectionStrings__RabbitMq"] = ClusterBroker.ConnectionString(vhost, first: node) };
            instances[node - 1] = (await (await env.StartRunnerAsync(2, own)).GetStatusAsync()).Instance;
        }
        var victimInstance = instances[1];
        try
        {
            // 30 parents that each wait for two children (90 markers) and 60 echoes.
            var work = new List<(Task<InvocationCompleted> Run, string Task, int Expected)>();
            for (var i = 0; i < 90; i++)
            {
                var (task, arguments, expected) = i % 3 == 0
                    ? ("marker", "{\"ms\":400,\"children\":[300,300]}", 1000)
                    : ("echo", $"{{\"i\":{i}}}", i);
                work.Add((env.Bus.Client.RunAsync(task, Json.Parse(arguments)), task, expected));
            }
            // Mid-run, while the replica on node 2 holds paused parents.
            await TestBus.PollAsync(() => env.Bus.Waiting.Count(w => w.RunnerInstance == victimInstance) >= 2 ? "paused" : null, Patience,
                "parents paused on the replica connected to node 2");
            var completedBefore = env.Bus.Completed.Count;
            await cluster.KillNodeAsync(2, "KILL");
            var sinceKill = System.Diagnostics.Stopwatch.StartNew();
            output.WriteLine($"node 2 killed after {completedBefore} completions");
            await TestBus.PollAsync(() => env.Bus.Completed.Skip(completedBefore).Any(c => c.RunnerInstance == victimInstance) ? "done" : null, Patience,
                "a completion from the replica of node 2 after the node died");
            output.WriteLine($"the replica of node 2 published its first completion {sinceKill.Elapsed.TotalSeconds:F1} s after the node died");

            await Task.WhenAll(work.Select(w => w.Run)).WaitAsync(Patience);
            output.WriteLine($"all roots completed {sinceKill.Elapsed.TotalSeconds:F1} s after the node died");
            foreach (var (run, task, expected) in work)
            {
                var completed = await run;
                Assert.Equal(InvocationStatus.Succeeded, completed.Status);
                var value = task == "echo" ? completed.Result!.Value.GetProperty("i").GetInt32() : completed.Result!.Value.GetProperty("marked").GetInt32();
                Assert.Equal(expected, value);
            }
            await env.WaitForSagaQuietAsync(TimeSpan.FromSeconds(15));

            // Exactly once, from the events: one Completed per invocation (roots and children).
            var byId = env.Bus.Completed.GroupBy(c => c.InvocationId).ToList();
            Assert.Equal(90 + 60, byId.Count);
            Assert.All(byId, g => Assert.True(g.Count() == 1, $"{g.Key} completed {g.Count()} times"));
            // ... and from the marker files: every marker ran to its end once, and no two runs of one overlapped.
            var runs = File.ReadAllLines(markers).Select(l => l.Split(' ')).Where(f => f.Length == 5)
                .GroupBy(f => f[1]).ToDictionary(g => g.Key, g => g.ToList());
            Assert.Equal(90, runs.Count);
            foreach (var (id, lines) in runs)
            {
                Assert.True(lines.Count(f => f[0] == "end") == 1, $"marker {id} ended {lines.Count(f => f[0] == "end")} times");
                Assert.True(lines.Select(f => f[4]).Distinct().Count() == 1, $"marker {id} ran in more than one process");
            }
            // The replica whose first node died finished work after the loss, through another node.
            var victimAfter = env.Bus.Completed.Skip(completedBefore).Count(c => c.RunnerInstance == victimInstance);
            output.WriteLine($"the replica of node 2 completed {victimAfter} invocations after the node died");
            Assert.True(victimAfter > 0, "the replica connected to node 2 completed nothing after the node died");
            Assert.All(env.Runners, r => Assert.False(r.HasExited));
        }
        finally
        {
            File.Delete(markers);
        }
    }
}
