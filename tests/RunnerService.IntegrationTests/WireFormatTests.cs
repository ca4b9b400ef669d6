using System.Text;
using RabbitMQ.Client;
using RunnerService.Contracts;
using RunnerService.IntegrationTests.Infrastructure;
using Xunit.Abstractions;

namespace RunnerService.IntegrationTests;

/// <summary>
/// The wire format as docs/wire-format.md describes it, exercised the way a service in another language would: plain
/// AMQP publishes with RabbitMQ.Client, no MassTransit on the sending side.
/// </summary>
[Collection(BrokerCollection.Name)]
[Trait("Category", "Integration")]
public sealed class WireFormatTests(BrokerFixture broker, ITestOutputHelper output)
{
    static readonly TimeSpan Patience = TimeSpan.FromSeconds(60);

    /// <summary>The exchange docs/wire-format.md tells publishers to use.</summary>
    const string InvocationExchange = "RunnerService.Contracts:RunInvocation";

    [Fact]
    public async Task A_raw_json_invocation_published_with_plain_amqp_runs_in_a_worker_and_completes_Succeeded()
    {
        await using var env = await RunnerEnvironment.StartAsync(broker, output, slots: 1);
        var id = Guid.NewGuid();

        await PublishAsync(env, $$$"""{"invocationId":"{{{id}}}","taskName":"echo","arguments":{"hello":"from raw json","n":[1,2,3]}}""");

        var completed = await env.Bus.WaitForCompletedAsync(id, Patience);
        output.WriteLine($"{completed.Status} {completed.Error} pid {completed.ProcessId}");
        Assert.Equal(InvocationStatus.Succeeded, completed.Status);
        Assert.Equal("echo", completed.TaskName);
        Assert.Equal("from raw json", completed.Result!.Value.GetProperty("hello").GetString());
        Assert.Equal(3, completed.Result.Value.GetProperty("n").GetArrayLength());
        var started = await env.Bus.WaitForStartedAsync(id, Patience);
        Assert.True(started.ProcessId > 0);
        Assert.Equal(started.ProcessId, completed.ProcessId);
        Assert.Null(await env.Bus.GetAsync("run-invocation_error"));
    }

    [Fact]
    public async Task The_minimal_envelope_of_docs_wire_format_published_with_plain_amqp_still_runs()
    {
        await using var env = await RunnerEnvironment.StartAsync(broker, output, slots: 1);
        var id = Guid.NewGuid();

        await PublishAsync(env, $$$$"""
            {"messageId":"{{{{Guid.NewGuid()}}}}","messageType":["urn:message:RunnerService.Contracts:RunInvocation"],
             "message":{"invocationId":"{{{{id}}}}","taskName":"echo","arguments":{"form":"envelope"}}}
            """, "application/vnd.masstransit+json");

        var completed = await env.Bus.WaitForCompletedAsync(id, Patience);
        Assert.Equal(InvocationStatus.Succeeded, completed.Status);
        Assert.Equal("envelope", completed.Result!.Value.GetProperty("form").GetString());
        Assert.True(completed.ProcessId > 0);
    }

    [Fact]
    public async Task Raw_json_takes_field_names_in_any_case_and_a_timeout_as_seconds_or_as_hh_mm_ss()
    {
        await using var env = await RunnerEnvironment.StartAsync(broker, output, slots: 4);
        // Each sleeps 4 s under a 1 s limit: only a timeout read as one second ends it TimedOut. "1" as a .NET
        // TimeSpan string would be one day, and a number is not a TimeSpan to System.Text.Json at all.
        var bodies = new[]
        {
            """{"INVOCATIONID":"{0}","TaskName":"sleep","ARGUMENTS":{"ms":4000},"timeout":1}""",
            """{"invocationid":"{0}","taskname":"sleep","arguments":{"ms":4000},"Timeout":"00:00:01"}""",
            """{"invocationId":"{0}","taskName":"sleep","arguments":{"ms":4000},"timeout":"1"}""",
            """{"invocationId":"{0}","taskName":"sleep","arguments":{"ms":4000},"timeout":0.75,"maxAttempts":1}""",
        };
        var ids = bodies.Select(_ => Guid.NewGuid()).ToArray();
        for (var i = 0; i < bodies.Length; i++)
            await PublishAsync(env, bodies[i].Replace("{0}", ids[i].ToString(), StringComparison.Ordinal));

        foreach (var id in ids)
        {
            var completed = await env.Bus.WaitForCompletedAsync(id, Patience);
            output.WriteLine($"{id}: {completed.Status} {completed.Error} after {completed.RunFor}");
            Assert.Equal(InvocationStatus.TimedOut, completed.Status);
            Assert.Equal(InvocationErrorTypes.TimedOut, completed.Error!.Type);
            Assert.True(completed.RunFor < TimeSpan.FromSeconds(3.5), $"ran {completed.RunFor}");
        }
        Assert.Null(await env.Bus.GetAsync("run-invocation_error"));
    }

    [Fact]
    public async Task A_body_with_a_readable_id_that_is_not_a_valid_invocation_fails_InvalidInvocation_and_lands_in_the_error_queue()
    {
        await using var env = await RunnerEnvironment.StartAsync(broker, output, slots: 1);
        var badTimeout = Guid.NewGuid();
        var badTaskName = Guid.NewGuid();
        var noContentType = Guid.NewGuid();
        var otherMessageType = Guid.NewGuid();
        var cases = new (Guid Id, string Body, string? ContentType, string Reason)[]
        {
            // Raw JSON whose field has the wrong type: System.Text.Json refuses it before any validation.
            (badTimeout, $$"""{"invocationId":"{{badTimeout}}","taskName":"echo","timeout":"soon"}""", "application/json", "timeout"),
            // Raw JSON that reads fine and fails validation: the same rejection as the envelope form.
            (badTaskName, $$"""{"invocationId":"{{badTaskName}}","taskName":"rm -rf /"}""", "application/json", "is not a valid task name"),
            // A raw body sent without a content type is taken for an envelope, and is not one.
            (noContentType, $$"""{"invocationId":"{{noContentType}}","taskName":"echo"}""", null, "application/json"),
            // An envelope of another message type (MassTransit would move it to _skipped, silently).
            (otherMessageType, $$$"""{"messageId":"{{{Guid.NewGuid()}}}","messageType":["urn:message:Somebody.Else:RunThing"],"message":{"invocationId":"{{{otherMessageType}}}","taskName":"echo"}}""",
                "application/vnd.masstransit+json", "urn:message:Somebody.Else:RunThing"),
        };
        foreach (var c in cases)
            await PublishAsync(env, c.Body, c.ContentType);

        foreach (var c in cases)
        {
            var completed = await env.Bus.WaitForCompletedAsync(c.Id, Patience);
            output.WriteLine($"{c.Id}: {completed.Status} {completed.Error}");
            Assert.Equal(InvocationStatus.Failed, completed.Status);
            Assert.Equal(InvocationErrorTypes.InvalidInvocation, completed.Error!.Type);
            Assert.Contains(c.Reason, completed.Error.Message, StringComparison.Ordinal);
            Assert.Equal(0, completed.ProcessId);
        }

        var faults = new List<(string Body, string Reason)>();
        while (faults.Count < cases.Length)
        {
            var faulted = await TestBus.PollAsync(async () => await env.Bus.GetAsync("run-invocation_error"), Patience, "the invalid messages in the error queue");
            faults.Add((Encoding.UTF8.GetString(faulted.Body.Span), Encoding.UTF8.GetString((byte[])faulted.BasicProperties.Headers!["MT-Fault-Message"]!)));
        }
        foreach (var c in cases)
        {
            var fault = Assert.Single(faults, f => f.Body == c.Body);
            output.WriteLine($"error queue: {fault.Reason}");
            Assert.Contains(c.Reason, fault.Reason, StringComparison.Ordinal);
        }
        Assert.Empty(env.Bus.Started);
        Assert.Null(await env.Bus.GetAsync("run-invocation_skipped"));
        Assert.False(env.Runner.HasExited);
    }

    [Fact]
    public async Task A_task_waiting_for_an_invocation_that_is_rejected_gets_its_InvalidInvocation_failure()
    {
        await using var env = await RunnerEnvironment.StartAsync(broker, output, slots: 1);
        var rejected = Guid.NewGuid();
        var waiter = env.Bus.Client.RunAsync("wait_for", Json.Parse($$"""{"invocationId":"{{rejected}}","catch":true}"""));
        await TestBus.PollAsync(() => env.Bus.Waiting.FirstOrDefault(w => w.WaitingFor.Contains(rejected)), Patience, "the waiter's wait");

        await PublishAsync(env, $$"""{"invocationId":"{{rejected}}","taskName":"echo","maxAttempts":"many"}""");

        // The rejection's completion reaches the saga like any other: the paused waiter is resumed with the failure.
        var completed = await waiter.WaitAsync(Patience);
        output.WriteLine($"{completed.Status}: {completed.Result}");
        Assert.Equal(InvocationStatus.Succeeded, completed.Status);
        var caught = completed.Result!.Value.GetProperty("caught");
        Assert.Equal(InvocationErrorTypes.InvalidInvocation, caught.GetProperty("type").GetString());
        Assert.Contains("maxAttempts", caught.GetProperty("message").GetString(), StringComparison.OrdinalIgnoreCase);
    }

    [Fact]
    public async Task Garbage_with_no_readable_id_lands_in_the_error_queue_with_a_reason_and_the_service_goes_on()
    {
        await using var env = await RunnerEnvironment.StartAsync(broker, output, slots: 1);
        var garbage = new (string Body, string ContentType)[]
        {
            ("this is not json {", "application/json"),
            ("[1, 2, 3]", "application/json"),
            ("\u0001\u0002binary", "application/octet-stream"),
        };
        foreach (var (body, contentType) in garbage)
            await PublishAsync(env, body, contentType);

        var faults = new List<(string Body, string Reason)>();
        while (faults.Count < garbage.Length)
        {
            var faulted = await TestBus.PollAsync(async () => await env.Bus.GetAsync("run-invocation_error"), Patience, "the garbage in the error queue");
            var reason = Encoding.UTF8.GetString((byte[])faulted.BasicProperties.Headers!["MT-Fault-Message"]!);
            output.WriteLine($"error queue: {reason}");
            faults.Add((Encoding.UTF8.GetString(faulted.Body.Span), reason));
        }
        Assert.All(garbage, g => Assert.Contains(faults, f => f.Body == g.Body && !string.IsNullOrWhiteSpace(f.Reason)));

        var next = Guid.NewGuid();
        await PublishAsync(env, $$"""{"invocationId":"{{next}}","taskName":"echo","arguments":"after the garbage"}""");
        var completed = await env.Bus.WaitForCompletedAsync(next, Patience);
        Assert.Equal(InvocationStatus.Succeeded, completed.Status);
        Assert.DoesNotContain(env.Bus.Completed, c => c.InvocationId != next);
        Assert.False(env.Runner.HasExited);
    }

    /// <summary>Publishes as docs/wire-format.md says: persistent, to the invocation exchange, content type application/json.</summary>
    static async Task PublishAsync(RunnerEnvironment env, string body, string? contentType = "application/json")
    {
        var factory = new ConnectionFactory { Uri = env.Bus.Broker };
        await using var connection = await factory.CreateConnectionAsync();
        await using var channel = await connection.CreateChannelAsync();
        var properties = new BasicProperties { Persistent = true };
        if (contentType is not null)
            properties.ContentType = contentType;
        await channel.BasicPublishAsync(InvocationExchange, "", true, properties, Encoding.UTF8.GetBytes(body));
    }
}
