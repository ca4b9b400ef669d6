using System.Diagnostics;
using MassTransit;
using RunnerService.Contracts;
using RunnerService.IntegrationTests.Infrastructure;
using RunnerService.TestSupport;
using Xunit.Abstractions;

namespace RunnerService.IntegrationTests;

/// <summary>Several replicas as separate OS processes on one broker and one PostgreSQL saga store (a schema per test).</summary>
[Collection(BrokerCollection.Name)]
[Trait("Category", "Scale")]
public sealed class ScaleTests(BrokerFixture broker, PostgresFixture postgres, ITestOutputHelper output)
{
    static readonly TimeSpan Patience = TimeSpan.FromMinutes(5);

    async Task<Dictionary<string, string>> PostgresAsync(string testName)
    {
        var connection = await postgres.GetConnectionStringAsync();
        output.WriteLine($"PostgreSQL from {postgres.Source}");
        return new Dictionary<string, string>
        {
            ["ConnectionStrings__Sagas"] = connection,
            ["Runner__SagaSchema"] = postgres.NewSchema($"t_{testName}"),
        };
    }

    [Fact]
    public async Task Three_single_slot_replicas_run_a_mixed_workload_with_waits_across_replicas()
    {
        var settings = await PostgresAsync("mixed");
        await using var env = await RunnerEnvironment.StartAsync(broker, output, slots: 1, settings, runners: 3);
        var work = new List<(Task<InvocationCompleted> Run, string Task, int Expected)>();
        for (var i = 0; i < 200; i++)
        {
            // 200 roots: 4 × fib(8) (67 invocations each), 4 × fanout(3,3) (40 each) and 192 echoes — about 620 processes.
            var (task, arguments, expected) = (i % 50) switch
            {
                0 => ("fib", "{\"n\":8}", 21),
                25 => ("fanout", "{\"width\":3,\"depth\":3}", 27),
                _ => ("echo", $"{{\"i\":{i}}}", i),
            };
            work.Add((env.Bus.Client.RunAsync(task, Json.Parse(arguments)), task, expected));
        }
        var watch = Stopwatch.StartNew();
        await Task.WhenAll(work.Select(w => w.Run)).WaitAsync(Patience);
        output.WriteLine($"200 roots ({env.Bus.Completed.Count} invocations) in {watch.Elapsed.TotalSeconds:F1} s");
        foreach (var (run, task, expected) in work)
        {
            var completed = await run;
            Assert.Equal(InvocationStatus.Succeeded, completed.Status);
            var value = task == "echo" ? completed.Result!.Value.GetProperty("i").GetInt32() : completed.Result!.Value.GetInt32();
            Assert.Equal(expected, value);
        }

        // Waits crossed replicas: a parent paused on one replica had children finish on others and was resumed by its own.
        var completions = env.Bus.Completed.GroupBy(c => c.InvocationId).ToDictionary(g => g.Key, g => g.First());
        var crossed = env.Bus.Waiting
            .Where(w => completions.TryGetValue(w.InvocationId, out var done) && done.RunnerInstance == w.RunnerInstance)
            .Count(w => w.WaitingFor.Any(child => completions.TryGetValue(child, out var c) && c.RunnerInstance != w.RunnerInstance));
        output.WriteLine($"{crossed} waits had children finish on another replica and resumed on their own");
        Assert.True(crossed > 0);
        Assert.Equal(3, env.Bus.Started.Select(s => s.RunnerInstance).Distinct().Count());
        Assert.All(completions.Keys, id => Assert.Single(env.Bus.Completed, c => c.InvocationId == id));
    }

    [Fact]
    public async Task A_replica_killed_mid_run_loses_nothing_and_nothing_runs_twice_at_once()
    {
        var settings = await PostgresAsync("kill");
        await using var env = await RunnerEnvironment.StartAsync(broker, output, slots: 1, settings, runners: 3);
        env.VerifySagasOnDispose = false;
        var roots = Enumerable.Range(0, 30)
            .Select(i => i % 3 == 0
                ? env.Bus.Client.RunAsync("fib", Json.Parse("{\"n\":5}"))
                : env.Bus.Client.RunAsync("sleep", Json.Parse("{\"ms\":400}")))
            .ToArray();
        await TestBus.PollAsync(() => env.Bus.Completed.Count >= 10 ? "some" : null, Patience, "the first completions");
        var victim = env.Runners[1];
        var victimInstance = (await victim.GetStatusAsync()).Instance;
        var victimPids = env.Bus.Started.Where(s => s.RunnerInstance == victimInstance).Select(s => s.ProcessId).ToHashSet();
        await victim.KillAsync();
        var killedAt = DateTimeOffset.UtcNow;
        var watch = Stopwatch.StartNew();

        var results = await Task.WhenAll(roots).WaitAsync(TimeSpan.FromSeconds(90));
        output.WriteLine($"all roots done {watch.Elapsed.TotalSeconds:F1} s after the kill");
        Assert.True(watch.Elapsed < TimeSpan.FromSeconds(60), $"took {watch.Elapsed} after the kill");
        Assert.All(results, r => Assert.Equal(InvocationStatus.Succeeded, r.Status));
        Assert.All(results.Where(r => r.TaskName == "fib"), r => Assert.Equal(5, r.Result!.Value.GetInt32()));

        await Task.Delay(2000);
        foreach (var group in env.Bus.Completed.GroupBy(c => c.InvocationId))
            Assert.Single(group);
        // A second start of an invocation only ever came after the kill, when the first start's worker was dead.
        foreach (var group in env.Bus.Started.GroupBy(s => s.InvocationId).Where(g => g.Count() > 1))
        {
            var ordered = group.OrderBy(s => s.StartedAt).ToArray();
            foreach (var later in ordered.Skip(1))
            {
                Assert.True(later.StartedAt >= killedAt.AddMilliseconds(-50), $"{group.Key} started twice before the kill");
                Assert.Contains(ordered[0].ProcessId, victimPids.Concat(env.Bus.Started.Where(s => s.RunnerInstance == victimInstance).Select(s => s.ProcessId)));
            }
        }
        Assert.All(env.Bus.Started.Where(s => s.RunnerInstance == victimInstance), s => Assert.False(ProcessSignals.IsAlive(s.ProcessId)));
    }

    [Fact]
    public async Task Quorum_queues_option_declares_the_shared_queues_and_the_replicas_own_queue_as_quorum_queues()
    {
        await using var env = await RunnerEnvironment.StartAsync(broker, output, slots: 1,
            new Dictionary<string, string> { ["Runner__QuorumQueues"] = "true" });
        var done = await env.Bus.Client.RunAsync("upper", Json.Parse("{\"text\":\"quorum\"}")).WaitAsync(Patience);
        Assert.Equal("QUORUM", done.Result!.Value.GetString());
        Assert.Equal("quorum", await broker.QueueTypeAsync(env.VirtualHost.Name, "run-invocation"));
        Assert.Equal("quorum", await broker.QueueTypeAsync(env.VirtualHost.Name, "invocation-state"));
        Assert.Equal("quorum", await broker.QueueTypeAsync(env.VirtualHost.Name, $"runner-instance-{(await env.Runner.GetStatusAsync()).Instance}"));
    }
}
