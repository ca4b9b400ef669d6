using System.Diagnostics;
using MassTransit;
using RunnerService.Contracts;
using RunnerService.IntegrationTests.Infrastructure;
using Xunit.Abstractions;

namespace RunnerService.IntegrationTests;

/// <summary>Replica death and the broker's consumer timeout: nothing lost, nothing run twice at once.</summary>
[Collection(BrokerCollection.Name)]
[Trait("Category", "Faults")]
public sealed class RecoveryTests(BrokerFixture broker, ITestOutputHelper output)
{
    static readonly TimeSpan Patience = TimeSpan.FromSeconds(120);

    [Fact]
    public async Task A_paused_invocation_of_a_killed_replica_is_rerouted_by_another_within_30_seconds_and_runs_once()
    {
        await using var env = await RunnerEnvironment.StartAsync(broker, output, slots: 1, runners: 2);
        var dependency = NewId.NextGuid();
        var parentId = NewId.NextGuid();
        var parent = env.Bus.Client.RunAsync(new RunInvocation { InvocationId = parentId, TaskName = "wait_for", Arguments = Json.Parse($"{{\"invocationId\":\"{dependency}\"}}") });
        var wait = await TestBus.PollAsync(() => env.Bus.Waiting.FirstOrDefault(w => w.InvocationId == parentId), Patience, "the parent's wait");
        var owner = env.Runners.Single(r => r.ChildPids().Contains(wait.ProcessId));
        var survivor = env.Runners.Single(r => r != owner);

        var survivorInstance = (await survivor.GetStatusAsync()).Instance;
        await owner.KillAsync();
        var killedAt = Stopwatch.StartNew();
        // The survivor takes it over: by the recovery check (rerouted as attempt 2) or, when the killed replica had not
        // yet acknowledged the delivery, by the redelivery, whose saga claim takes over from the dead owner.
        var rerun = await TestBus.PollAsync(() => env.Bus.Started.FirstOrDefault(s => s.InvocationId == parentId && s.RunnerInstance == survivorInstance),
            TimeSpan.FromSeconds(45), "the parent's start on the surviving replica");
        output.WriteLine($"taken over {killedAt.Elapsed.TotalSeconds:F1} s after the kill, attempt {rerun.Attempt}");
        Assert.True(killedAt.Elapsed < TimeSpan.FromSeconds(30), $"recovery took {killedAt.Elapsed}");

        await env.Bus.TestWaitAsync(() => env.Bus.Waiting.Any(w => w.InvocationId == parentId && w.RunnerInstance == survivorInstance), Patience);
        await env.Bus.Client.SubmitAsync(new RunInvocation { InvocationId = dependency, TaskName = "echo", Arguments = Json.Parse("{\"after\":\"recovery\"}") });
        var done = await parent.WaitAsync(Patience);
        Assert.Equal(InvocationStatus.Succeeded, done.Status);
        Assert.Equal("recovery", done.Result!.Value.GetProperty("after").GetString());
        Assert.Equal(survivorInstance, done.RunnerInstance);
        await Task.Delay(1000);
        Assert.Single(env.Bus.Completed, c => c.InvocationId == parentId);
        Assert.Equal(2, env.Bus.Started.Count(s => s.InvocationId == parentId));
        Assert.False(ProcessSignals.IsAlive(wait.ProcessId));
    }

    [Fact]
    public async Task A_running_invocation_of_a_killed_replica_comes_back_and_completes_exactly_once()
    {
        await using var env = await RunnerEnvironment.StartAsync(broker, output, slots: 1, runners: 2);
        var id = NewId.NextGuid();
        var run = env.Bus.Client.RunAsync(new RunInvocation { InvocationId = id, TaskName = "sleep", Arguments = Json.Parse("{\"ms\":3000}") });
        var started = await env.Bus.WaitForStartedAsync(id, Patience);
        var owner = env.Runners.Single(r => r.ChildPids().Contains(started.ProcessId));
        await owner.KillAsync();

        var done = await run.WaitAsync(Patience);
        Assert.Equal(InvocationStatus.Succeeded, done.Status);
        Assert.NotEqual(started.ProcessId, done.ProcessId);
        await Task.Delay(1000);
        Assert.Single(env.Bus.Completed, c => c.InvocationId == id);
        // The two runs never overlapped: the second started only after the first replica (and its worker) died.
        Assert.False(ProcessSignals.IsAlive(started.ProcessId));
    }

    [Fact]
    public async Task A_run_longer_than_the_brokers_consumer_timeout_completes_once_without_a_redelivery_loop()
    {
        // RabbitMQ checks delivery timeouts about once a minute; a 3 s timeout fires at the first check.
        await using var privateBroker = await PrivateBroker.StartAsync(5782, consumerTimeoutMs: 3000);
        await using var env = await RunnerEnvironment.StartAsync(broker, output, slots: 1, runners: 0, brokerOverride: privateBroker.AmqpUri);
        // The runner holds a delivery at most DeliveryHoldLimit, set below the broker's timeout as docs/faults.md says.
        await env.StartRunnerAsync(slots: 1, new Dictionary<string, string> { ["Runner__DeliveryHoldLimit"] = "00:00:02" });
        var id = NewId.NextGuid();
        var run = env.Bus.Client.RunAsync(new RunInvocation { InvocationId = id, TaskName = "sleep", Arguments = Json.Parse("{\"ms\":75000}") });
        var done = await run.WaitAsync(TimeSpan.FromSeconds(150));
        Assert.Equal(InvocationStatus.Succeeded, done.Status);
        await Task.Delay(3000);
        Assert.Single(env.Bus.Started, s => s.InvocationId == id);
        Assert.Single(env.Bus.Completed, c => c.InvocationId == id);
        Assert.Equal(0u, await env.Bus.ReadyMessagesAsync("run-invocation"));
        // The run outlived the broker's timeout check (about once a minute) with its delivery already acknowledged.
        Assert.Contains("its delivery is acknowledged", env.Runner.Output);
        Assert.DoesNotContain("PRECONDITION_FAILED", env.Runner.Output);
    }

    [Fact]
    public async Task A_broker_restart_while_invocations_run_and_wait_loses_nothing()
    {
        await using var privateBroker = await PrivateBroker.StartAsync(5792);
        await using var env = await RunnerEnvironment.StartAsync(broker, output, slots: 3, brokerOverride: privateBroker.AmqpUri);
        var client = env.Bus.Client;
        // A parent paused on a dependency that will only be submitted after the restart,
        var dependency = NewId.NextGuid();
        var waiter = NewId.NextGuid();
        await client.SubmitAsync(new RunInvocation { InvocationId = waiter, TaskName = "wait_for", Arguments = Json.Parse($"{{\"invocationId\":\"{dependency}\"}}") });
        await TestBus.PollAsync(() => env.Bus.Waiting.FirstOrDefault(w => w.InvocationId == waiter), Patience, "the waiter's pause");
        // two runs that end while the broker is down, and a tree of waits in full swing when it goes.
        var sleeps = new[] { NewId.NextGuid(), NewId.NextGuid() };
        foreach (var id in sleeps)
            await client.SubmitAsync(new RunInvocation { InvocationId = id, TaskName = "sleep", Arguments = Json.Parse("{\"ms\":3000}") });
        var fib = NewId.NextGuid();
        await client.SubmitAsync(new RunInvocation { InvocationId = fib, TaskName = "fib", Arguments = Json.Parse("{\"n\":8}") });
        await env.Bus.TestWaitAsync(() => sleeps.All(id => env.Bus.Started.Any(s => s.InvocationId == id)) && env.Bus.Waiting.Any(w => w.InvocationId == fib), Patience);

        await privateBroker.StopAsync();
        output.WriteLine("broker stopped");
        await Task.Delay(TimeSpan.FromSeconds(5));
        await privateBroker.StartAgainAsync();
        output.WriteLine("broker started again");
        await client.SubmitAsync(new RunInvocation { InvocationId = dependency, TaskName = "echo", Arguments = Json.Parse("{\"after\":\"restart\"}") });

        // Events sent while the test's own bus was reconnecting may be missed here: the saga's record is the judge.
        var finals = new Dictionary<Guid, InvocationStatusReport>();
        foreach (var id in sleeps.Append(fib).Append(waiter).Append(dependency))
            finals[id] = await TestBus.PollAsync(() => FinalStatusAsync(client, id), TimeSpan.FromSeconds(150), $"the final status of {id}");
        Assert.All(finals.Values, r => Assert.Equal("Succeeded", r.Status));
        Assert.Equal(21, finals[fib].Result!.Value.GetInt32()); // fib(8)
        Assert.Equal("restart", finals[waiter].Result!.Value.GetProperty("after").GetString());
        // Every worker ends (the last completions are published while their workers exit).
        await env.Bus.TestWaitAsync(() => env.Runner.ChildPids().Count == 0, TimeSpan.FromSeconds(10));
        // Runs that ended while the broker was down were redelivered afterwards, and recognised rather than run again.
        foreach (var id in sleeps)
            Assert.Single(env.Runner.Output.Split('\n'), line => line.Contains($"Invocation {id} (sleep) Succeeded", StringComparison.Ordinal));
    }

    [Fact]
    public async Task SIGTERM_while_the_broker_is_down_still_ends_the_service_and_its_workers_in_bounded_time()
    {
        await using var privateBroker = await PrivateBroker.StartAsync(5832);
        await using var env = await RunnerEnvironment.StartAsync(broker, output, slots: 2, runners: 0, brokerOverride: privateBroker.AmqpUri);
        var runner = await env.StartRunnerAsync(slots: 2, new Dictionary<string, string> { ["Runner__ShutdownGrace"] = "00:00:02" });
        var waiter = NewId.NextGuid();
        var sleeper = NewId.NextGuid();
        await env.Bus.Client.SubmitAsync(new RunInvocation { InvocationId = waiter, TaskName = "wait_for", Arguments = Json.Parse($"{{\"invocationId\":\"{NewId.NextGuid()}\"}}") });
        await env.Bus.Client.SubmitAsync(new RunInvocation { InvocationId = sleeper, TaskName = "sleep", Arguments = Json.Parse("{\"ms\":120000}") });
        await env.Bus.TestWaitAsync(() => env.Bus.Waiting.Any(w => w.InvocationId == waiter) && env.Bus.Started.Any(s => s.InvocationId == sleeper), Patience);
        var workers = runner.ChildPids();
        Assert.Equal(2, workers.Count);

        await privateBroker.StopAsync();
        var clock = Stopwatch.StartNew();
        await runner.StopAsync(TimeSpan.FromSeconds(120)); // SIGTERM; after 120 s the helper would SIGKILL it
        output.WriteLine($"stopped {clock.Elapsed.TotalSeconds:F1} s after SIGTERM");
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(60), $"stopping took {clock.Elapsed}");
        Assert.All(workers, pid => Assert.False(ProcessSignals.IsAlive(pid), $"worker {pid} outlived the service"));
        Assert.Contains("could not be rerouted", runner.Output);
        env.VerifySagasOnDispose = false; // the broker is gone: the saga never saw the end
    }

    static async Task<InvocationStatusReport?> FinalStatusAsync(Contracts.Client.InvocationClient client, Guid id)
    {
        try
        {
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(5));
            var report = await client.GetStatusAsync(id, timeout.Token);
            return report.Status is "Succeeded" or "Failed" or "TimedOut" or "Cancelled" ? report : null;
        }
        catch (Exception ex) when (ex is RequestTimeoutException or OperationCanceledException or MassTransitException)
        {
            await Task.Delay(500);
            return null;
        }
    }
}
