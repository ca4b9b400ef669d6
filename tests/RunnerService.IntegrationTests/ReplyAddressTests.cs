using System.Diagnostics;
using System.Text;
using System.Text.Json;
using RabbitMQ.Client;
using RunnerService.Contracts;
using RunnerService.IntegrationTests.Infrastructure;
using Xunit.Abstractions;

namespace RunnerService.IntegrationTests;

/// <summary>
/// Completions addressed to their publisher: AMQP <c>reply_to</c> for raw publishers, MassTransit's
/// <c>ResponseAddress</c> for .NET ones (<c>IInvocationClient</c>), and the examples of docs/examples run as a
/// publisher in another language would run them. Real broker, real runner, real worker processes.
/// </summary>
[Collection(BrokerCollection.Name)]
[Trait("Category", "Integration")]
public sealed class ReplyAddressTests(BrokerFixture broker, ITestOutputHelper output)
{
    static readonly TimeSpan Patience = TimeSpan.FromSeconds(60);
    const string InvocationExchange = "RunnerService.Contracts:RunInvocation";

    [Fact]
    public async Task Three_clients_running_200_invocations_each_at_once_each_receive_exactly_their_own_completions_counted_at_the_broker()
    {
        await using var env = await RunnerEnvironment.StartAsync(broker, output, slots: 4);
        var clients = new List<TestBus>();
        try
        {
            for (var k = 0; k < 3; k++)
                clients.Add(await TestBus.StartAsync(env.Bus.Broker));

            var runs = clients.Select((client, k) => Enumerable.Range(0, 200)
                .Select(i => client.Client.RunAsync("echo", Json.Parse($$"""{"client":{{k}},"i":{{i}}}""")))
                .ToArray()).ToArray();
            var results = await Task.WhenAll(runs.Select(Task.WhenAll)).WaitAsync(TimeSpan.FromMinutes(5));

            for (var k = 0; k < clients.Count; k++)
            {
                Assert.All(results[k], c => Assert.Equal(InvocationStatus.Succeeded, c.Status));
                Assert.All(results[k], c => Assert.Equal(k, c.Result!.Value.GetProperty("client").GetInt32()));
                Assert.Equal(200, results[k].Select(c => c.InvocationId).Distinct().Count());
            }

            // At the broker: each client's queue got its 200 completions and nothing else, and is bound to no
            // exchange but the default one and its own (MassTransit's endpoint exchange): not to the completion
            // exchange, so no copy of the cluster's completion traffic.
            var queues = clients.Select(c => QueueOf(c.Client.ReplyAddress!)).ToArray();
            foreach (var queue in queues)
                await TestBus.PollAsync(async () => await broker.MessagesRoutedToQueueAsync(env.VirtualHost.Name, queue) >= 200 ? queue : null,
                    TimeSpan.FromSeconds(30), $"the statistics of {queue}");
            await Task.Delay(TimeSpan.FromSeconds(6)); // one more statistics interval: nothing more arrives
            foreach (var queue in queues)
            {
                var routed = await broker.MessagesRoutedToQueueAsync(env.VirtualHost.Name, queue);
                var sources = await broker.QueueBindingSourcesAsync(env.VirtualHost.Name, queue);
                output.WriteLine($"{queue}: {routed} message(s) routed, bound to [{string.Join(", ", sources.Select(s => $"'{s}'"))}]");
                Assert.Equal(200, routed);
                Assert.DoesNotContain("RunnerService.Contracts:InvocationCompleted", sources);
                Assert.All(sources, s => Assert.True(s == "" || s == queue, $"{queue} is bound to {s}"));
            }
        }
        finally
        {
            foreach (var client in clients)
                await client.DisposeAsync();
        }
    }

    [Fact]
    public async Task Raw_publishes_with_reply_to_get_their_completion_there_as_raw_json_a_timeout_and_an_invalid_task_name_included()
    {
        await using var env = await RunnerEnvironment.StartAsync(broker, output, slots: 2);
        var factory = new ConnectionFactory { Uri = env.Bus.Broker };
        await using var connection = await factory.CreateConnectionAsync();
        await using var channel = await connection.CreateChannelAsync();
        var replyQueue = (await channel.QueueDeclareAsync("", durable: false, exclusive: true, autoDelete: true)).QueueName;

        var timedOut = Guid.NewGuid();
        var invalid = Guid.NewGuid();
        await PublishAsync(channel, $$"""{"invocationId":"{{timedOut}}","taskName":"sleep","arguments":{"ms":5000},"timeout":1}""", replyQueue);
        await PublishAsync(channel, $$"""{"invocationId":"{{invalid}}","taskName":"no such task!"}""", replyQueue);

        var replies = new Dictionary<Guid, (JsonElement Body, string? ContentType)>();
        while (replies.Count < 2)
        {
            var reply = await TestBus.PollAsync(async () => await channel.BasicGetAsync(replyQueue, autoAck: true), Patience, "the replies");
            var body = JsonDocument.Parse(reply.Body.ToArray()).RootElement.Clone();
            output.WriteLine($"{reply.BasicProperties.ContentType}: {body}");
            replies[Guid.Parse(body.GetProperty("invocationId").GetString()!)] = (body, reply.BasicProperties.ContentType);
        }

        // The raw event object, as the completion exchange carries it under "message".
        Assert.All(replies.Values, r => Assert.Equal("application/json", r.ContentType));
        Assert.Equal("TimedOut", replies[timedOut].Body.GetProperty("status").GetString());
        Assert.Equal(InvocationErrorTypes.TimedOut, replies[timedOut].Body.GetProperty("error").GetProperty("type").GetString());
        Assert.Equal("Failed", replies[invalid].Body.GetProperty("status").GetString());
        Assert.Equal(InvocationErrorTypes.InvalidInvocation, replies[invalid].Body.GetProperty("error").GetProperty("type").GetString());
        var published = await env.Bus.WaitForCompletedAsync(timedOut, Patience);
        Assert.Equal(published.ProcessId, replies[timedOut].Body.GetProperty("processId").GetInt32());
        await env.Bus.WaitForCompletedAsync(invalid, Patience);
        Assert.NotNull(await env.Bus.GetAsync("run-invocation_error")); // the invalid one, with its reason
        Assert.Null(await channel.BasicGetAsync(replyQueue, autoAck: true)); // one reply each
    }

    [Fact]
    public async Task The_python_and_node_examples_run_against_the_service_and_get_the_completions_it_published()
    {
        await using var env = await RunnerEnvironment.StartAsync(broker, output, slots: 2);
        var examples = Path.Combine(RepoPaths.Root, "docs", "examples");
        var amqp = env.Bus.Broker.ToString();
        var http = env.Runner.HttpBase.ToString();
        var node = Path.Combine(examples, "node");
        if (!Directory.Exists(Path.Combine(node, "node_modules")))
            await RunAsync("npm", node, TimeSpan.FromMinutes(3), "ci", "--no-audit", "--no-fund");

        var runs = new (string Name, string[] Lines)[]
        {
            ("python raw", await RunAsync(RepoPaths.Python3(), examples, Patience, Path.Combine(examples, "publish_raw.py"), amqp, http, "echo", """{"from":"python"}""")),
            ("node raw", await RunAsync("node", node, Patience, Path.Combine(node, "publish_raw.mjs"), amqp, http, "echo", """{"from":"node"}""")),
            ("python envelope", await RunAsync(RepoPaths.Python3(), examples, Patience, Path.Combine(examples, "publish_envelope.py"), amqp, "echo", """{"from":"envelope"}""")),
        };

        foreach (var (name, lines) in runs)
        {
            var received = JsonDocument.Parse(lines[0]).RootElement;
            var id = Guid.Parse(received.GetProperty("invocationId").GetString()!);
            var published = await env.Bus.WaitForCompletedAsync(id, Patience);
            output.WriteLine($"{name}: {lines[0]}");
            Assert.Equal(published.Status.ToString(), received.GetProperty("status").GetString());
            Assert.Equal(published.ProcessId, received.GetProperty("processId").GetInt32());
            Assert.True(JsonElement.DeepEquals(published.Result!.Value, received.GetProperty("result")), $"{published.Result} against {received.GetProperty("result")}");
            if (lines.Length > 1)
            {
                var report = JsonDocument.Parse(lines[1]).RootElement;
                Assert.Equal(id.ToString(), report.GetProperty("invocationId").GetString());
                Assert.Equal("Succeeded", report.GetProperty("status").GetString());
            }
        }
        Assert.Equal(2, runs.Count(r => r.Lines.Length > 1)); // both raw examples read the status over HTTP
    }

    static async Task PublishAsync(IChannel channel, string body, string replyTo)
    {
        var properties = new BasicProperties { Persistent = true, ContentType = "application/json", ReplyTo = replyTo };
        await channel.BasicPublishAsync(InvocationExchange, "", true, properties, Encoding.UTF8.GetBytes(body));
    }

    static string QueueOf(Uri address) => Uri.UnescapeDataString(address.AbsolutePath.TrimEnd('/').Split('/')[^1]);

    /// <summary>Runs a program to its end; fails the test on a non-zero exit. Returns its stdout lines.</summary>
    async Task<string[]> RunAsync(string program, string directory, TimeSpan timeout, params string[] arguments)
    {
        var start = new ProcessStartInfo(program) { WorkingDirectory = directory, RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var argument in arguments)
            start.ArgumentList.Add(argument);
        using var process = Process.Start(start)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        try
        {
            await process.WaitForExitAsync().WaitAsync(timeout);
        }
        catch (TimeoutException)
        {
            process.Kill(entireProcessTree: true);
            throw;
        }
        var error = await stderr;
        if (error.Length > 0)
            output.WriteLine($"{Path.GetFileName(program)} stderr: {error}");
        Assert.True(process.ExitCode == 0, $"{program} {string.Join(' ', arguments)} exited {process.ExitCode}: {error}");
        return (await stdout).Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
    }

}
