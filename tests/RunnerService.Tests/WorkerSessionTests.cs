using System.Text.Json;
using Microsoft.Extensions.Logging.Abstractions;
using RunnerService.Contracts;
using RunnerService.Contracts.Protocol;
using RunnerService.Hosting;
using RunnerService.Processes;

namespace RunnerService.Tests;

/// <summary>
/// A worker session over a real (shell-script) worker process, without a broker: the process side alone — its
/// outcome, its timeout with SIGTERM then SIGKILL, and a pause and resume with a resume larger than a pipe holds.
/// </summary>
[Trait("Category", "Unit")]
public sealed class WorkerSessionTests : IDisposable
{
    readonly string _directory = Directory.CreateTempSubdirectory("session-test-").FullName;

    public void Dispose() => Directory.Delete(_directory, recursive: true);

    WorkerPool Pool(string script, TimeSpan? killGrace = null)
    {
        var path = Path.Combine(_directory, "worker.sh");
        File.WriteAllText(path, "#!/bin/bash\n" + script + "\n");
        if (OperatingSystem.IsLinux())
            File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        var options = new RunnerOptions { WorkerCommand = path, KillGrace = killGrace ?? TimeSpan.FromSeconds(1), StdinTimeout = TimeSpan.FromSeconds(5) };
        return new WorkerPool(options, NullLogger.Instance);
    }

    static async Task<WorkerSession> StartAsync(WorkerPool pool, TimeSpan timeout)
    {
        var worker = await pool.TakeAsync();
        var invocation = new RunInvocation { InvocationId = Guid.NewGuid(), TaskName = "t" };
        var session = new WorkerSession(worker, invocation, 1, timeout, offerReuse: false, pool.Timings, NullLogger.Instance);
        session.Send(new StartInvocationMessage { InvocationId = invocation.InvocationId, TaskName = "t", Attempt = 1 });
        return session;
    }

    sealed class NoInvokes : ISessionCallbacks
    {
        public Task OnInvokeAsync(WorkerSession session, InvokeMessage invoke) => Task.CompletedTask;

        public void OnProgress(WorkerSession session, ProgressMessage progress)
        {
        }
    }

    [Fact]
    public async Task A_result_line_is_the_final_outcome_and_the_worker_exits()
    {
        using var pool = Pool("read -r line; echo '{\"type\":\"result\",\"result\":42}'");
        var session = await StartAsync(pool, TimeSpan.FromSeconds(30));
        var outcome = Assert.IsType<SessionOutcome.Final>(await session.RunAsync(new NoInvokes()));
        Assert.Equal(InvocationStatus.Succeeded, outcome.Status);
        Assert.Equal(42, outcome.Result!.Value.GetInt32());
        await session.AwaitExitAfterFinalAsync();
        Assert.True(session.Exited.IsCompleted);
    }

    [Fact]
    public async Task A_timeout_sends_sigterm_and_a_worker_that_ignores_it_is_killed_after_the_kill_grace()
    {
        using var pool = Pool("read -r line; trap '' TERM; while :; do sleep 0.05; done", killGrace: TimeSpan.FromMilliseconds(700));
        var session = await StartAsync(pool, TimeSpan.FromMilliseconds(300));
        var watch = System.Diagnostics.Stopwatch.StartNew();
        var outcome = Assert.IsType<SessionOutcome.Final>(await session.RunAsync(new NoInvokes()).WaitAsync(TimeSpan.FromSeconds(20)));
        Assert.Equal(InvocationStatus.TimedOut, outcome.Status);
        Assert.InRange(watch.Elapsed, TimeSpan.FromMilliseconds(900), TimeSpan.FromSeconds(10));
        Assert.Equal(128 + 9, session.ExitCode);
    }

    [Fact]
    public async Task A_paused_worker_holds_no_pipe_here_and_takes_a_resume_larger_than_a_pipe_after_it_runs_again()
    {
        // Waits, then answers with the length of the resume line it got.
        using var pool = Pool("""
            read -r line
            echo '{"type":"wait","invocationIds":["3f2504e0-4f89-41d3-9a0c-0305e82c3301"]}'
            read -r resume
            printf '{"type":"result","result":%d}\n' "${#resume}"
            """);
        var session = await StartAsync(pool, TimeSpan.FromSeconds(30));
        Assert.IsType<SessionOutcome.Waiting>(await session.RunAsync(new NoInvokes()));
        session.Pause();
        Assert.True(session.Process.Parked, "a paused worker's pipe ends are closed on this side");

        var big = new string('r', 300_000);
        var results = new ResumeMessage
        {
            Results = [new DependencyOutcome { InvocationId = Guid.Parse("3f2504e0-4f89-41d3-9a0c-0305e82c3301"), Status = InvocationStatus.Succeeded, Result = JsonSerializer.SerializeToElement(big) }],
        };
        Assert.True(session.TryClaimResume(1));
        Assert.False(session.TryClaimResume(1)); // a duplicate resume of the same wait
        Assert.True(session.Resume(results));
        var outcome = Assert.IsType<SessionOutcome.Final>(await session.RunAsync(new NoInvokes()).WaitAsync(TimeSpan.FromSeconds(20)));
        Assert.Equal(WorkerProtocol.Encode(results).Length, outcome.Result!.Value.GetInt32());
    }
}
