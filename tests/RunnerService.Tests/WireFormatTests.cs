using System.Net.Mime;
using System.Text;
using System.Text.Json;
using MassTransit.Serialization;
using RunnerService.Contracts;
using RunnerService.Invocations;

namespace RunnerService.Tests;

/// <summary>How the two body forms of docs/wire-format.md read, with the JSON options MassTransit uses for both.</summary>
[Trait("Category", "Unit")]
public class WireFormatTests
{
    static readonly JsonSerializerOptions MassTransitOptions = SystemTextJsonMessageSerializer.Options;

    static RunInvocation Read(string json) => JsonSerializer.Deserialize<RunInvocation>(json, MassTransitOptions)!;

    [Theory]
    [InlineData("30", 30_000)]
    [InlineData("0.25", 250)]
    [InlineData("\"30\"", 30_000)]
    [InlineData("\"00:00:30\"", 30_000)]
    [InlineData("\"00:01:00.5\"", 60_500)]
    [InlineData("\"1.00:00:00\"", 86_400_000)]
    public void A_timeout_reads_as_seconds_or_as_hh_mm_ss(string timeout, long milliseconds) =>
        Assert.Equal(TimeSpan.FromMilliseconds(milliseconds), Read($$"""{"invocationId":"{{Guid.NewGuid()}}","taskName":"echo","timeout":{{timeout}}}""").Timeout);

    [Theory]
    [InlineData("\"soon\"")]
    [InlineData("\"\"")]
    [InlineData("true")]
    [InlineData("{}")]
    [InlineData("1e300")]
    public void A_timeout_that_is_neither_is_refused_naming_the_field(string timeout)
    {
        var error = Assert.Throws<JsonException>(() => Read($$"""{"taskName":"echo","timeout":{{timeout}}}"""));
        Assert.Equal("$.timeout", error.Path);
        Assert.Contains("$.timeout", InvocationBody.DescribeJsonError(error), StringComparison.Ordinal);
    }

    [Fact]
    public void A_timeout_is_written_as_before_and_an_absent_one_stays_null()
    {
        var json = JsonSerializer.Serialize(new RunInvocation { TaskName = "echo", Timeout = TimeSpan.FromSeconds(90) }, MassTransitOptions);
        Assert.Contains("\"timeout\": \"00:01:30\"", json, StringComparison.Ordinal);
        Assert.Null(Read("""{"taskName":"echo"}""").Timeout);
        Assert.Null(Read("""{"taskName":"echo","timeout":null}""").Timeout);
    }

    [Fact]
    public void Field_names_are_read_in_any_case()
    {
        var id = Guid.NewGuid();
        var invocation = Read($$"""{"INVOCATIONID":"{{id}}","TaskName":"echo","arguments":{"A":1},"MaxAttempts":3}""");
        Assert.Equal(id, invocation.InvocationId);
        Assert.Equal("echo", invocation.TaskName);
        Assert.Equal(1, invocation.Arguments!.Value.GetProperty("A").GetInt32());
        Assert.Equal(3, invocation.MaxAttempts);
    }

    [Theory]
    [InlineData("\"TimedOut\"")]
    [InlineData("\"timedout\"")]
    [InlineData("2")]
    public void An_enum_reads_from_its_name_in_any_case_or_its_number(string status) =>
        Assert.Equal(InvocationStatus.TimedOut, JsonSerializer.Deserialize<InvocationCompleted>($$"""{"status":{{status}}}""", MassTransitOptions)!.Status);

    [Fact]
    public void The_identity_of_a_rejected_body_is_read_from_either_form()
    {
        var id = Guid.NewGuid();
        var parent = Guid.NewGuid();
        var raw = InvocationBody.TryReadIdentity(Bytes($$"""{"InvocationId":"{{id}}","taskname":"rm -rf /","parentInvocationId":"{{parent}}","timeout":"soon"}"""),
            new ContentType("application/json"));
        Assert.Equal((id, "rm -rf /", parent), (raw!.InvocationId, raw.TaskName, raw.ParentInvocationId));

        var envelope = $$$"""{"messageType":["urn:message:X:Y"],"message":{"invocationId":"{{{id}}}","taskName":"echo"}}""";
        Assert.Equal(id, InvocationBody.TryReadIdentity(Bytes(envelope), new ContentType("application/vnd.masstransit+json"))!.InvocationId);
        Assert.Equal(id, InvocationBody.TryReadIdentity(Bytes(envelope), null)!.InvocationId);
    }

    [Theory]
    [InlineData("not json", "application/json")]
    [InlineData("[1,2]", "application/json")]
    [InlineData("{\"invocationId\":\"not-a-guid\"}", "application/json")]
    [InlineData("{\"invocationId\":\"00000000-0000-0000-0000-000000000000\"}", "application/json")]
    [InlineData("{\"taskName\":\"echo\"}", null)]
    public void A_body_without_a_readable_id_has_no_identity(string body, string? contentType) =>
        Assert.Null(InvocationBody.TryReadIdentity(Bytes(body), contentType is null ? null : new ContentType(contentType)));

    [Fact]
    public void An_unreadable_body_is_described_for_its_publisher()
    {
        var error = new System.Runtime.Serialization.SerializationException("An error occured while deserializing the message envelope", new ArgumentNullException("envelope"));
        Assert.StartsWith("the body is not JSON (content type application/json)", InvocationBody.DescribeUnreadable(Bytes("{oops"), new ContentType("application/json"), error));
        Assert.Contains("a raw RunInvocation must be sent with content type application/json",
            InvocationBody.DescribeUnreadable(Bytes("""{"invocationId":"x"}"""), null, error));
        Assert.Contains("no content type", InvocationBody.DescribeUnreadable(Bytes("""{"invocationId":"x"}"""), null, error));
    }

    [Fact]
    public void A_rejected_body_keeps_its_reply_address_from_the_raw_field_or_the_envelope()
    {
        var id = Guid.NewGuid();
        var raw = InvocationBody.TryReadIdentity(Bytes($$"""{"invocationId":"{{id}}","taskName":"bad name","replyTo":"my-replies"}"""), new ContentType("application/json"));
        Assert.Equal("my-replies", raw!.ReplyTo);
        var envelope = $$$"""{"responseAddress":"queue:client-q","messageType":["urn:message:X:Y"],"message":{"invocationId":"{{{id}}}","taskName":"echo"}}""";
        Assert.Equal("queue:client-q", InvocationBody.TryReadIdentity(Bytes(envelope), null)!.ReplyTo);
        Assert.Null(InvocationBody.TryReadIdentity(Bytes($$"""{"invocationId":"{{id}}"}"""), new ContentType("application/json"))!.ReplyTo);
    }

    [Theory]
    [InlineData("amq.gen-JzTY20BRgKO-HjmUJj0wLg", false, "amq.gen-JzTY20BRgKO-HjmUJj0wLg")]
    [InlineData("my-service.replies", false, "my-service.replies")]
    [InlineData("weird:name", false, "weird:name")]
    [InlineData("queue:client-q", true, "client-q")]
    [InlineData("rabbitmq://broker:5672/vhost/vm_app_bus_abc?temporary=true", true, "vm_app_bus_abc")]
    [InlineData("rabbitmq://broker/vm_app_bus_abc", true, "vm_app_bus_abc")]
    public void A_reply_address_is_a_plain_queue_name_or_a_masstransit_address_naming_its_queue(string replyTo, bool envelope, string queue)
    {
        Assert.Equal(envelope, ReplySender.IsEndpointAddress(replyTo, out var address));
        Assert.Equal(queue, envelope ? ReplySender.QueueOf(address) : replyTo);
    }

    [Theory]
    [InlineData("exchange:RunnerService.Contracts:InvocationCompleted", "names an exchange")]
    [InlineData("topic:x", "names an exchange")]
    [InlineData("queue:", "names no queue")]
    [InlineData("line\nbreak", "not a queue name")]
    public void A_reply_address_that_names_no_usable_queue_is_refused(string replyTo, string problem) =>
        Assert.Contains(problem, ReplySender.Problem(replyTo), StringComparison.Ordinal);

    [Fact]
    public void A_reply_queue_name_over_255_bytes_is_refused_and_a_normal_one_is_not()
    {
        Assert.Contains("255 bytes", ReplySender.Problem(new string('q', 256)), StringComparison.Ordinal);
        Assert.Null(ReplySender.Problem(new string('q', 255)));
        Assert.Null(ReplySender.Problem("rabbitmq://broker/vhost/vm_app_bus_abc?temporary=true"));
    }

    static byte[] Bytes(string text) => Encoding.UTF8.GetBytes(text);
}
