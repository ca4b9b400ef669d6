using System.Diagnostics;
using RunnerService.Contracts;
using RunnerService.IntegrationTests.Infrastructure;
using Xunit.Abstractions;

namespace RunnerService.IntegrationTests;

/// <summary>
/// Cancellation in each state an invocation can be in (queued, running, paused, finished, not arrived yet) and down a
/// subtree, over a real broker with real worker processes. Every cancelled invocation completes exactly once, as
/// Cancelled, and no process of it is left.
/// </summary>
[Collection(BrokerCollection.Name)]
[Trait("Category", "Integration")]
public sealed class CancelTests(BrokerFixture broker, ITestOutputHelper output)
{
    static readonly TimeSpan Patience = TimeSpan.FromSeconds(60);

    /// <summary>The default kill grace (Runner:KillGrace) plus 2 s: by then no process of a cancelled invocation lives.</summary>
    static readonly TimeSpan NoProcessAfter = TimeSpan.FromSeconds(5 + 2);

    [Fact]
    public async Task A_queued_invocation_never_runs_and_one_cancelled_before_it_is_published_never_runs_either()
    {
        await using var env = await RunnerEnvironment.StartAsync(broker, output, slots: 1);
        // The only slot is busy: the next one stays queued.
        var blockerId = Guid.NewGuid();
        var blocker = env.Bus.Client.RunAsync(new RunInvocation { InvocationId = blockerId, TaskName = "sleep", Arguments = Json.Parse("""{"ms":3000}""") });
        await env.Bus.WaitForStartedAsync(blockerId, Patience);
        var queued = Guid.NewGuid();
        await env.Bus.Client.SubmitAsync(new RunInvocation { InvocationId = queued, TaskName = "echo", Arguments = Json.Parse("""{"queued":true}""") });
        var reply = await env.Bus.Client.CancelAsync(queued, "changed my mind", "the test");
        output.WriteLine($"queued: {reply.Outcome} ({reply.Status})");
        Assert.Equal("Pending", reply.Outcome);

        // Cancelled before it exists at all: the cancel waits in the saga for it.
        var early = Guid.NewGuid();
        Assert.Equal("Pending", (await env.Bus.Client.CancelAsync(early, "too early")).Outcome);
        await env.Bus.Client.SubmitAsync(new RunInvocation { InvocationId = early, TaskName = "echo" });

        foreach (var id in new[] { queued, early })
        {
            var completed = await env.Bus.WaitForCompletedAsync(id, Patience);
            output.WriteLine($"{id}: {completed.Status} {completed.Error}");
            Assert.Equal(InvocationStatus.Cancelled, completed.Status);
            Assert.Equal(InvocationErrorTypes.Cancelled, completed.Error!.Type);
            Assert.Equal(0, completed.ProcessId);
        }
        Assert.Contains("the test: changed my mind", (await env.Bus.WaitForCompletedAsync(queued, Patience)).Error!.Message, StringComparison.Ordinal);
        Assert.Equal(InvocationStatus.Succeeded, (await blocker.WaitAsync(Patience)).Status);
        await env.WaitForSagaQuietAsync(TimeSpan.FromSeconds(10));
        Assert.DoesNotContain(env.Bus.Started, s => s.InvocationId == queued || s.InvocationId == early);
        Assert.Single(env.Bus.Completed, c => c.InvocationId == queued);
        Assert.Single(env.Bus.Completed, c => c.InvocationId == early);
        Assert.Equal("Cancelled", (await env.Bus.Client.GetStatusAsync(queued)).Status);
    }

    [Fact]
    public async Task A_running_invocation_is_killed_within_the_kill_grace_and_a_finished_one_is_left_as_it_is()
    {
        await using var env = await RunnerEnvironment.StartAsync(broker, output, slots: 2);
        var running = Guid.NewGuid();
        await env.Bus.Client.SubmitAsync(new RunInvocation { InvocationId = running, TaskName = "sleep", Arguments = Json.Parse("""{"ms":60000}""") });
        var started = await env.Bus.WaitForStartedAsync(running, Patience);
        // It is tracked by the saga after Runner:TrackAfter; a cancel before that waits for the track.
        var watch = Stopwatch.StartNew();
        var reply = await env.Bus.Client.CancelAsync(running, "stop it");
        output.WriteLine($"running: {reply.Outcome} ({reply.Status})");
        var completed = await env.Bus.WaitForCompletedAsync(running, Patience);
        output.WriteLine($"{completed.Status} {completed.Error} after {watch.Elapsed}");
        Assert.Equal(InvocationStatus.Cancelled, completed.Status);
        Assert.Equal(started.ProcessId, completed.ProcessId);
        Assert.True(watch.Elapsed < NoProcessAfter + TimeSpan.FromSeconds(2), $"cancelled after {watch.Elapsed}");
        await AssertGoneAsync(started.ProcessId);

        var finished = await env.Bus.Client.RunAsync("echo", Json.Parse("{}"));
        await TestBus.PollAsync(async () => (await env.Bus.Client.GetStatusAsync(finished.InvocationId)).Status == "Succeeded" ? "" : null, Patience, "the saga's record");
        var late = await env.Bus.Client.CancelAsync(finished.InvocationId, "too late");
        Assert.Equal("AlreadyFinished", late.Outcome);
        Assert.Equal("Succeeded", late.Status);
        await Task.Delay(1000);
        Assert.Single(env.Bus.Completed, c => c.InvocationId == finished.InvocationId);
        Assert.Single(env.Bus.Completed, c => c.InvocationId == running);
    }

    [Fact]
    public async Task A_paused_parent_is_killed_where_it_sleeps_and_its_whole_subtree_is_cancelled_once_each()
    {
        var markers = Path.Combine(Path.GetTempPath(), $"cancel-markers-{Guid.NewGuid():N}");
        await using var env = await RunnerEnvironment.StartAsync(broker, output, slots: 3,
            new Dictionary<string, string> { ["Runner__WorkerEnvironment__RUNNER_MARKER_FILE"] = markers });
        try
        {
            // A parent that starts two long children and waits for both: it is paused while they run.
            var parent = Guid.NewGuid();
            await env.Bus.Client.SubmitAsync(new RunInvocation { InvocationId = parent, TaskName = "marker", Arguments = Json.Parse("""{"ms":100,"children":[60000,60000]}""") });
            var wait = await TestBus.PollAsync(() => env.Bus.Waiting.FirstOrDefault(w => w.InvocationId == parent), Patience, "the parent's wait");
            var children = wait.WaitingFor;
            Assert.Equal(2, children.Count);
            foreach (var child in children)
                await env.Bus.WaitForStartedAsync(child, Patience);
            var pids = env.Bus.Started.Where(s => s.InvocationId == parent || children.Contains(s.InvocationId)).Select(s => s.ProcessId).ToArray();
            // Paused for certain: the saga has recorded the wait (the worker is stopped, nobody drives it).
            await TestBus.PollAsync(async () => (await env.Bus.Client.GetStatusAsync(parent)).Status == "Waiting" ? "" : null, Patience, "the saga's record of the wait");

            var watch = Stopwatch.StartNew();
            var reply = await env.Bus.Client.CancelAsync(parent, "the whole tree");
            output.WriteLine($"parent: {reply.Outcome} ({reply.Status})");
            Assert.Equal("Cancelling", reply.Outcome);
            Assert.Equal("Waiting", reply.Status);

            foreach (var id in children.Append(parent))
            {
                var completed = await env.Bus.WaitForCompletedAsync(id, Patience);
                output.WriteLine($"{id}: {completed.Status} {completed.Error}");
                Assert.Equal(InvocationStatus.Cancelled, completed.Status);
            }
            foreach (var pid in pids)
                await AssertGoneAsync(pid, NoProcessAfter - watch.Elapsed);
            await env.WaitForSagaQuietAsync(TimeSpan.FromSeconds(10));
            foreach (var id in children.Append(parent))
            {
                Assert.Single(env.Bus.Completed, c => c.InvocationId == id);
                Assert.Equal("Cancelled", (await env.Bus.Client.GetStatusAsync(id)).Status);
            }
        }
        finally
        {
            File.Delete(markers);
        }
    }

    /// <summary>The process is gone (reaped; /proc has no entry), within <paramref name="within"/> at most.</summary>
    static async Task AssertGoneAsync(int pid, TimeSpan? within = null)
    {
        var deadline = DateTime.UtcNow + (within is { } w && w > TimeSpan.Zero ? w : TimeSpan.FromSeconds(1));
        while (Directory.Exists($"/proc/{pid}") && DateTime.UtcNow < deadline)
            await Task.Delay(50);
        Assert.False(Directory.Exists($"/proc/{pid}"), $"process {pid} is still alive");
    }
}
