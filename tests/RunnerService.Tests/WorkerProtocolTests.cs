using System.Text;
using System.Text.Json;
using RunnerService.Contracts;
using RunnerService.Contracts.Protocol;

namespace RunnerService.Tests;

[Trait("Category", "Unit")]
public class WorkerProtocolTests
{
    [Fact]
    public void Every_message_type_round_trips_through_one_line()
    {
        var id = Guid.NewGuid();
        WorkerMessage[] messages =
        [
            new StartInvocationMessage { InvocationId = id, TaskName = "echo", Arguments = JsonDocument.Parse("{\"x\":1}").RootElement, Attempt = 2 },
            new ResumeMessage { Results = [new DependencyOutcome { InvocationId = id, Status = InvocationStatus.Failed, Error = new InvocationError { Type = "T", Message = "m" } }] },
            new HelloMessage { Pid = 42 },
            new LogMessage { Message = "hi" },
            new ProgressMessage { Fraction = 0.5 },
            new InvokeMessage { InvocationId = id, TaskName = "fib", Arguments = JsonDocument.Parse("{\"n\":3}").RootElement },
            new WaitMessage { InvocationIds = [id] },
            new ResultMessage { Result = JsonDocument.Parse("[1,2]").RootElement },
            new ErrorMessage { Error = new InvocationError { Type = "TaskError", Message = "boom" }, Retryable = true },
        ];
        foreach (var message in messages)
        {
            var line = WorkerProtocol.Encode(message);
            Assert.DoesNotContain('\n', line);
            Assert.True(WorkerProtocol.TryDecode(line, out var decoded, out var error), error);
            Assert.Equal(message.GetType(), decoded.GetType());
            Assert.Equal(line, WorkerProtocol.Encode(decoded));
        }
    }

    [Fact]
    public void The_direct_path_of_the_worker_writes_and_reads_the_same_lines_as_the_polymorphic_one()
    {
        var id = Guid.NewGuid();
        WorkerMessage[] messages =
        [
            new StartInvocationMessage { InvocationId = id, TaskName = "echo", Arguments = JsonDocument.Parse("{\"x\":1}").RootElement, Attempt = 2, Reuse = true },
            new ResumeMessage { Results = [new DependencyOutcome { InvocationId = id, Status = InvocationStatus.Failed, Error = new InvocationError { Type = "T", Message = "m" } }] },
            new ResumeMessage(),
            new HelloMessage { Pid = 42, Reusable = true },
            new LogMessage { Message = "hi" },
            new ProgressMessage { Fraction = 0.5 },
            new InvokeMessage { InvocationId = id, TaskName = "fib", Arguments = JsonDocument.Parse("{\"n\":3}").RootElement },
            new WaitMessage { InvocationIds = [id] },
            new ResultMessage(),
            new ResultMessage { Result = JsonDocument.Parse("[1,2]").RootElement },
            new ErrorMessage { Error = new InvocationError { Type = "TaskError", Message = "boom" }, Retryable = true },
        ];
        foreach (var message in messages)
        {
            var expected = WorkerProtocol.Encode(message);
            using var buffer = new MemoryStream();
            WorkerProtocol.WriteDirect(buffer, message);
            var direct = Encoding.UTF8.GetString(buffer.ToArray());
            Assert.Equal(expected + "\n", direct);
            Assert.True(WorkerProtocol.TryDecodeDirect(Encoding.UTF8.GetBytes(expected), out var decoded, out var error), error);
            Assert.Equal(message.GetType(), decoded.GetType());
            Assert.Equal(expected, WorkerProtocol.Encode(decoded));
        }
        // The discriminator may come anywhere; bad lines give a reason, never an exception.
        Assert.True(WorkerProtocol.TryDecodeDirect("{\"pid\":7,\"type\":\"hello\"}"u8, out var late, out _));
        Assert.Equal(7, Assert.IsType<HelloMessage>(late).Pid);
        foreach (var bad in new[] { "", "null", "[1]", "{\"pid\":1}", "{\"type\":\"nope\"}", "{\"type\":3}", "{\"type\":\"hello\",\"pid\":\"x\"}", "{\"type\":" })
        {
            Assert.False(WorkerProtocol.TryDecodeDirect(Encoding.UTF8.GetBytes(bad), out _, out var reason), bad);
            Assert.False(string.IsNullOrEmpty(reason));
        }
    }

    [Fact]
    public void Lines_name_their_type_and_the_first_message_carries_the_protocol_version()
    {
        var line = WorkerProtocol.Encode(new StartInvocationMessage { InvocationId = Guid.Empty, TaskName = "echo" });
        using var doc = JsonDocument.Parse(line);
        Assert.Equal("invocation", doc.RootElement.GetProperty("type").GetString());
        Assert.Equal(WorkerProtocol.Version, doc.RootElement.GetProperty("protocol").GetInt32());
        Assert.Contains("\"type\":\"hello\"", WorkerProtocol.Encode(new HelloMessage()));
    }

    [Fact]
    public void Type_may_come_after_other_properties_as_other_languages_write_it()
    {
        Assert.True(WorkerProtocol.TryDecode("{\"result\":{\"a\":1},\"type\":\"result\"}", out var message, out var error), error);
        var result = Assert.IsType<ResultMessage>(message);
        Assert.Equal(1, result.Result!.Value.GetProperty("a").GetInt32());
    }

    [Theory]
    [InlineData("not json at all")]
    [InlineData("{\"type\":\"teleport\"}")]
    [InlineData("{\"result\":1}")]
    [InlineData("null")]
    [InlineData("[1,2,3]")]
    [InlineData("{\"type\":\"result\"")]
    public void Garbage_is_rejected_with_a_reason_never_an_exception(string line)
    {
        Assert.False(WorkerProtocol.TryDecode(Encoding.UTF8.GetBytes(line), out _, out var error));
        Assert.False(string.IsNullOrWhiteSpace(error));
    }

    [Fact]
    public void Statuses_are_written_as_names()
    {
        var line = WorkerProtocol.Encode(new ResumeMessage { Results = [new DependencyOutcome { Status = InvocationStatus.TimedOut }] });
        Assert.Contains("\"status\":\"TimedOut\"", line);
    }
}
