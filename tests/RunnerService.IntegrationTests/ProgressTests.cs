using RunnerService.Contracts;
using RunnerService.IntegrationTests.Infrastructure;
using Xunit.Abstractions;

namespace RunnerService.IntegrationTests;

/// <summary>Progress reports: throttled to events, kept by the saga for status, shown by the CLI. Real broker and workers.</summary>
[Collection(BrokerCollection.Name)]
[Trait("Category", "Integration")]
public sealed class ProgressTests(BrokerFixture broker, ITestOutputHelper output)
{
    static readonly TimeSpan Patience = TimeSpan.FromSeconds(60);

    [Fact]
    public async Task A_hundred_reports_in_a_second_make_at_most_two_events_and_status_and_the_cli_show_the_last()
    {
        await using var env = await RunnerEnvironment.StartAsync(broker, output, slots: 2);

        // 100 reports within 0.6 s: the first at once, the latest at the end of the interval; at most 2 events.
        var seenByClient = new System.Collections.Concurrent.ConcurrentQueue<InvocationProgress>();
        env.Bus.Client.ProgressObserved += seenByClient.Enqueue;
        var burst = await env.Bus.Client.RunAsync("sleep", Json.Parse("""{"ms":600,"progress":100}""")).WaitAsync(Patience);
        Assert.Equal(InvocationStatus.Succeeded, burst.Status);
        await Task.Delay(2000); // a trailing event would be out by now
        var events = env.Bus.Progress.Where(p => p.InvocationId == burst.InvocationId).ToList();
        output.WriteLine($"burst: {events.Count} event(s): {string.Join(", ", events.Select(e => e.Message))}");
        Assert.InRange(events.Count, 1, 2);
        Assert.Equal(events.Count, seenByClient.Count(p => p.InvocationId == burst.InvocationId)); // its own queue got them too
        Assert.Equal(burst.ProcessId, events[0].ProcessId);

        // A long run: the saga keeps the last event, and status shows it while it runs.
        var slow = Guid.NewGuid();
        var running = env.Bus.Client.RunAsync(new RunInvocation { InvocationId = slow, TaskName = "sleep", Arguments = Json.Parse("""{"ms":5000,"progress":2}""") });
        var report = await TestBus.PollAsync(async () => (await env.Bus.Client.GetStatusAsync(slow)) is { Progress: not null } r ? r : null, Patience, "progress in the status");
        output.WriteLine($"status: {report.Status} {report.Progress!.Fraction} {report.Progress.Message}");
        Assert.Equal(0.5, report.Progress.Fraction);
        Assert.Equal("step 1 of 2", report.Progress.Message);
        Assert.Equal(InvocationStatus.Succeeded, (await running.WaitAsync(Patience)).Status);

        // submit --wait prints progress on stderr as it comes; stdout stays the completion's one JSON line.
        var (exit, stdout, stderr) = await Cli.RunAsync(env.Bus.Broker, "submit", "sleep", """{"ms":2500,"progress":2}""", "--wait");
        output.WriteLine(stderr);
        Assert.Equal(0, exit);
        Assert.Contains("progress 50%: step 1 of 2", stderr, StringComparison.Ordinal);
        Assert.Single(stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries));
    }
}
