using System.IO.Pipes;
using System.Text;
using RunnerService.Contracts;
using RunnerService.Contracts.Protocol;
using RunnerService.Processes;

namespace RunnerService.Tests;

/// <summary>The protocol rules and the never-blocking stdin, over in-memory streams and real (unread) pipes.</summary>
[Trait("Category", "Unit")]
public class WorkerConversationTests
{
    static WorkerConversation Over(string stdout, Stream? stdin = null) =>
        new(stdin ?? Stream.Null, new MemoryStream(Encoding.UTF8.GetBytes(stdout)), 1024);

    [Fact]
    public async Task Protocol_lines_become_events_and_the_end_of_stdout_is_closed()
    {
        var conversation = Over("{\"type\":\"hello\",\"protocol\":1,\"pid\":7}\n\n{\"type\":\"result\",\"result\":42}\n");
        var hello = Assert.IsType<WorkerEvent.Received>(await conversation.ReadAsync(CancellationToken.None));
        Assert.IsType<HelloMessage>(hello.Message);
        var result = Assert.IsType<WorkerEvent.Received>(await conversation.ReadAsync(CancellationToken.None));
        Assert.Equal(42, Assert.IsType<ResultMessage>(result.Message).Result!.Value.GetInt32());
        Assert.Equal(new WorkerEvent.Closed(null), await conversation.ReadAsync(CancellationToken.None));
    }

    [Theory]
    [InlineData("not json at all\n", "not a protocol message: 'not json at all'")]
    [InlineData("{\"type\":\"hello\",\"protocol\":2}\n", "speaks protocol version 2")]
    [InlineData("{\"type\":\"wait\"}\n", "'wait' without 'invocationIds'")]
    [InlineData("{\"type\":\"error\"}\n", "'error' without an 'error' object")]
    [InlineData("{\"type\":\"resume\",\"results\":[]}\n", "a message only the runner may send")]
    public async Task Lines_a_worker_may_not_write_are_violations_with_a_reason(string line, string reason)
    {
        var violation = Assert.IsType<WorkerEvent.Violation>(await Over(line).ReadAsync(CancellationToken.None));
        Assert.Equal(InvocationErrorTypes.ProtocolViolation, violation.ErrorType);
        Assert.Contains(reason, violation.Message);
    }

    [Fact]
    public async Task An_over_long_result_is_result_too_large_and_a_cut_line_is_closed_with_its_start()
    {
        var big = Assert.IsType<WorkerEvent.Violation>(await Over("{\"type\":\"result\",\"result\":\"" + new string('x', 5000) + "\"}\n").ReadAsync(CancellationToken.None));
        Assert.Equal(InvocationErrorTypes.ResultTooLarge, big.ErrorType);
        var partial = Assert.IsType<WorkerEvent.Closed>(await Over("{\"type\":\"res").ReadAsync(CancellationToken.None));
        Assert.Equal("{\"type\":\"res", partial.PartialLine);
    }

    [Fact]
    public async Task A_read_is_abandoned_when_asked_and_reports_closed()
    {
        using var server = new AnonymousPipeServerStream(PipeDirection.Out);
        using var client = new AnonymousPipeClientStream(PipeDirection.In, server.ClientSafePipeHandle);
        var conversation = new WorkerConversation(Stream.Null, client, 1024);
        using var abandon = new CancellationTokenSource(TimeSpan.FromMilliseconds(100));
        Assert.Equal(new WorkerEvent.Closed(null), await conversation.ReadAsync(abandon.Token).AsTask().WaitAsync(TimeSpan.FromSeconds(5)));
    }

    [Fact]
    public async Task Lines_already_in_the_pipe_are_read_even_when_the_first_read_starts_after_the_deadline()
    {
        // A resumed worker wrote its result and exited while the runner was still busy elsewhere (a slow publish): the
        // exit's output deadline passed before the read began. The result is in the pipe and must not be lost.
        using var server = new AnonymousPipeServerStream(PipeDirection.Out);
        using var client = new AnonymousPipeClientStream(PipeDirection.In, server.ClientSafePipeHandle);
        server.Write(Encoding.UTF8.GetBytes("{\"type\":\"log\",\"message\":\"done\"}\n{\"type\":\"result\",\"result\":7}\n"));
        var conversation = new WorkerConversation(Stream.Null, client, 1024);
        using var passed = new CancellationTokenSource();
        await passed.CancelAsync();
        Assert.IsType<LogMessage>(Assert.IsType<WorkerEvent.Received>(await conversation.ReadAsync(passed.Token)).Message);
        var result = Assert.IsType<WorkerEvent.Received>(await conversation.ReadAsync(passed.Token));
        Assert.Equal(7, Assert.IsType<ResultMessage>(result.Message).Result!.Value.GetInt32());
        // Nothing more comes (a grandchild still holds the pipe open): the late reads are still abandoned, soon.
        var watch = System.Diagnostics.Stopwatch.StartNew();
        Assert.Equal(new WorkerEvent.Closed(null), await conversation.ReadAsync(passed.Token).AsTask().WaitAsync(TimeSpan.FromSeconds(10)));
        Assert.True(watch.Elapsed < TimeSpan.FromSeconds(5), $"the late read was abandoned after {watch.Elapsed}");
    }

    [Fact]
    public async Task A_message_larger_than_the_pipe_to_a_reader_that_never_reads_stalls_at_the_deadline_without_blocking()
    {
        using var server = new AnonymousPipeServerStream(PipeDirection.In);
        using var stdin = new AnonymousPipeClientStream(PipeDirection.Out, server.ClientSafePipeHandle);
        var conversation = new WorkerConversation(stdin, Stream.Null, 1024);
        var results = Enumerable.Range(0, 4).Select(_ => new DependencyOutcome
        {
            InvocationId = Guid.NewGuid(),
            Status = InvocationStatus.Succeeded,
            Result = System.Text.Json.JsonSerializer.SerializeToElement(new string('r', 256 * 1024)),
        }).ToList();
        var sending = conversation.SendAsync(new ResumeMessage { Results = results }, TimeSpan.FromMilliseconds(300));
        Assert.False(sending.IsCompleted); // the caller got control back while the pipe is full
        Assert.Equal(SendResult.Stalled, await sending.WaitAsync(TimeSpan.FromSeconds(5)));
    }

    [Fact]
    public async Task A_message_to_a_reader_that_reads_is_delivered_whole()
    {
        using var server = new AnonymousPipeServerStream(PipeDirection.In);
        using var stdin = new AnonymousPipeClientStream(PipeDirection.Out, server.ClientSafePipeHandle);
        var conversation = new WorkerConversation(stdin, Stream.Null, 1024);
        var text = new string('r', 300_000);
        var sending = conversation.SendAsync(new ResumeMessage { Results = [new DependencyOutcome { InvocationId = Guid.NewGuid(), Status = InvocationStatus.Succeeded, Result = System.Text.Json.JsonSerializer.SerializeToElement(text) }] }, TimeSpan.FromSeconds(10));
        var line = await new StreamReader(server).ReadLineAsync().WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Equal(SendResult.Delivered, await sending);
        Assert.True(WorkerProtocol.TryDecode(line!, out var message, out _));
        Assert.Equal(text, Assert.IsType<ResumeMessage>(message).Results[0].Result!.Value.GetString());
    }
}
