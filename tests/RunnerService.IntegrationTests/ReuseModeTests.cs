using RunnerService.Contracts;
using RunnerService.IntegrationTests.Infrastructure;
using Xunit.Abstractions;

namespace RunnerService.IntegrationTests;

/// <summary>Reuse mode (<c>Runner:MaxInvocationsPerProcess</c> above 1) over a real broker with real workers.</summary>
[Collection(BrokerCollection.Name)]
[Trait("Category", "Integration")]
public sealed class ReuseModeTests(BrokerFixture broker, ITestOutputHelper output)
{
    static readonly TimeSpan Patience = TimeSpan.FromSeconds(90);

    static readonly Dictionary<string, string> ReuseFive = new() { ["Runner__MaxInvocationsPerProcess"] = "5" };

    [Fact]
    public async Task A_worker_runs_at_most_the_configured_number_of_invocations_and_each_gets_its_own_result()
    {
        await using var env = await RunnerEnvironment.StartAsync(broker, output, slots: 2, ReuseFive);
        var runs = Enumerable.Range(0, 40)
            .Select(i => env.Bus.Client.RunAsync("echo", Json.Parse($"{{\"i\":{i}}}")))
            .ToArray();
        var completions = await Task.WhenAll(runs).WaitAsync(Patience);

        for (var i = 0; i < completions.Length; i++)
        {
            Assert.Equal(InvocationStatus.Succeeded, completions[i].Status);
            Assert.Equal(i, completions[i].Result!.Value.GetProperty("i").GetInt32());
        }
        var perProcess = completions.GroupBy(c => c.ProcessId).Select(g => g.Count()).ToArray();
        output.WriteLine($"{perProcess.Length} processes for 40 invocations: {string.Join(",", perProcess)}");
        Assert.All(perProcess, n => Assert.InRange(n, 1, 5));
        Assert.InRange(perProcess.Length, 8, 20); // processes were reused (40 ÷ 5 = 8 at best)

        // Idle reused workers live on (at most one per slot); a service stop ends them.
        var status = await env.Runner.GetSettledStatusAsync(idleWorkers: 2);
        Assert.InRange(status.WorkersAlive, 0, 2);
        Assert.Equal(0, status.SlotsBusy);
        var idle = env.Runner.ChildPids();
        await env.Runner.StopAsync(TimeSpan.FromSeconds(30));
        Assert.All(idle, pid => Assert.False(ProcessSignals.IsAlive(pid), $"idle worker {pid} outlived the service"));
    }

    [Fact]
    public async Task A_crashed_worker_is_never_reused_a_task_error_is_and_waits_still_work()
    {
        await using var env = await RunnerEnvironment.StartAsync(broker, output, slots: 1, ReuseFive);
        var client = env.Bus.Client;

        var failed = await client.RunAsync("fail", Json.Parse("{\"message\":\"on purpose\"}")).WaitAsync(Patience);
        Assert.Equal(InvocationStatus.Failed, failed.Status);
        var afterFail = await client.RunAsync("echo", Json.Parse("{\"n\":1}")).WaitAsync(Patience);
        Assert.Equal(failed.ProcessId, afterFail.ProcessId); // a task's own error leaves a healthy worker: reused

        var crashed = await client.RunAsync("crash", Json.Parse("{\"exitCode\":3}")).WaitAsync(Patience);
        Assert.Equal(InvocationStatus.Failed, crashed.Status);
        Assert.Equal(InvocationErrorTypes.WorkerExited, crashed.Error!.Type);
        var afterCrash = await client.RunAsync("echo", Json.Parse("{\"n\":2}")).WaitAsync(Patience);
        Assert.Equal(InvocationStatus.Succeeded, afterCrash.Status);
        Assert.NotEqual(crashed.ProcessId, afterCrash.ProcessId);

        // A nested tree on one slot: parents pause (SIGSTOP) in their processes, children run in others.
        var fib = await client.RunAsync("fib", Json.Parse("{\"n\":6}")).WaitAsync(Patience);
        Assert.Equal(InvocationStatus.Succeeded, fib.Status);
        Assert.Equal(8, fib.Result!.Value.GetInt32());
    }
}
