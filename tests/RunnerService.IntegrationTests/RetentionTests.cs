using RunnerService.Contracts;
using RunnerService.IntegrationTests.Infrastructure;
using Xunit.Abstractions;

namespace RunnerService.IntegrationTests;

/// <summary>Finished saga records go after Runner:RetainFinished, except while an open invocation waits for one.</summary>
[Collection(BrokerCollection.Name)]
[Trait("Category", "Integration")]
public sealed class RetentionTests(BrokerFixture broker, ITestOutputHelper output)
{
    static readonly TimeSpan Patience = TimeSpan.FromSeconds(60);

    [Fact]
    public async Task Finished_records_are_removed_after_the_retention_but_not_while_an_open_invocation_waits_for_them()
    {
        var markers = Path.Combine(Path.GetTempPath(), $"retention-markers-{Guid.NewGuid():N}");
        await using var env = await RunnerEnvironment.StartAsync(broker, output, slots: 3, new Dictionary<string, string>
        {
            ["Runner__RetainFinished"] = "00:00:02",
            ["Runner__WorkerEnvironment__RUNNER_MARKER_FILE"] = markers,
        });
        env.VerifySagasOnDispose = false; // the records are meant to go
        try
        {
            // A plain finished invocation, recorded by the saga at its end.
            var plain = await env.Bus.Client.RunAsync("echo", Json.Parse("{}")).WaitAsync(Patience);
            await TestBus.PollAsync(async () => (await env.Bus.Client.GetStatusAsync(plain.InvocationId)).Found ? "" : null, Patience, "the plain record");

            // A parent waiting for a quick child and a slow one: the quick child is final while its waiter is open.
            var parent = Guid.NewGuid();
            var running = env.Bus.Client.RunAsync(new RunInvocation { InvocationId = parent, TaskName = "marker", Arguments = Json.Parse("""{"ms":100,"children":[100,7000]}""") });
            var wait = await TestBus.PollAsync(() => env.Bus.Waiting.FirstOrDefault(w => w.InvocationId == parent), Patience, "the parent's wait");
            var quick = await TestBus.PollAsync(() => env.Bus.Completed.FirstOrDefault(c => wait.WaitingFor.Contains(c.InvocationId)), Patience, "the quick child's end");
            await Task.Delay(TimeSpan.FromSeconds(4)); // twice the retention, several sweeps

            Assert.False((await env.Bus.Client.GetStatusAsync(plain.InvocationId)).Found, "the plain record outlived its retention");
            var kept = await env.Bus.Client.GetStatusAsync(quick.InvocationId);
            output.WriteLine($"quick child while its parent waits: found {kept.Found}, {kept.Status}");
            Assert.True(kept.Found, "a record an open invocation waits for was removed");
            Assert.Equal("Succeeded", kept.Status);

            // Once nothing waits for them, the whole tree goes too.
            Assert.Equal(InvocationStatus.Succeeded, (await running.WaitAsync(Patience)).Status);
            var tree = wait.WaitingFor.Append(parent).ToArray();
            await TestBus.PollAsync(async () =>
            {
                foreach (var id in tree)
                {
                    if ((await env.Bus.Client.GetStatusAsync(id)).Found)
                        return null;
                }
                return "";
            }, TimeSpan.FromSeconds(20), "the tree's records to go");
        }
        finally
        {
            File.Delete(markers);
        }
    }
}
