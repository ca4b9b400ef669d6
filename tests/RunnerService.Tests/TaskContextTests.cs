using System.IO.Pipes;
using System.Text;
using RunnerService.Contracts;
using RunnerService.Contracts.Protocol;
using RunnerService.Worker;

namespace RunnerService.Tests;

[Trait("Category", "Unit")]
public class TaskContextTests
{
    [Fact]
    public async Task WaitAllSettled_returns_to_its_caller_before_the_resume_arrives_and_completes_with_it()
    {
        // The worker's stdin is a pipe the runner writes to; here the test is the runner.
        using var runner = new AnonymousPipeServerStream(PipeDirection.Out);
        using var stdin = new AnonymousPipeClientStream(PipeDirection.In, runner.ClientSafePipeHandle);
        var stdout = new MemoryStream();
        var context = new TaskContext(new StartInvocationMessage { InvocationId = Guid.NewGuid(), TaskName = "parent" },
            new WorkerChannel(stdout, new StreamReader(stdin, new UTF8Encoding(false))));
        var child = new InvocationHandle(Guid.NewGuid(), "child");

        // Called on a thread of its own: a WaitAllSettled that blocks until the resume fails the test instead of hanging it.
        var call = Task.Factory.StartNew(() => context.WaitAllSettled(child).AsTask(),
            CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);
        Task<IReadOnlyList<DependencyOutcome>> waiting;
        try
        {
            Assert.True(await Task.WhenAny(call, Task.Delay(TimeSpan.FromSeconds(5))) == call,
                "WaitAllSettled blocked its caller until the resume arrived");
            waiting = await call;
            Assert.False(waiting.IsCompleted);
            Assert.Contains("\"type\":\"wait\"", Encoding.UTF8.GetString(stdout.ToArray()), StringComparison.Ordinal);
        }
        finally
        {
            // The resume; it also frees a call that blocked.
            WorkerProtocol.Write(runner, new ResumeMessage
            {
                Results = [new DependencyOutcome { InvocationId = child.InvocationId, Status = InvocationStatus.Failed, Error = new InvocationError { Type = "T", Message = "m" } }],
            });
            runner.Flush();
        }

        var outcome = Assert.Single(await waiting.WaitAsync(TimeSpan.FromSeconds(10)));
        Assert.Equal(child.InvocationId, outcome.InvocationId);
        Assert.Equal(InvocationStatus.Failed, outcome.Status);
    }
}
