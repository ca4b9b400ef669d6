using System.Globalization;
using MassTransit;
using Microsoft.Data.Sqlite;
using RunnerService.Contracts;
using RunnerService.Contracts.Protocol;
using RunnerService.IntegrationTests.Infrastructure;
using Xunit.Abstractions;

namespace RunnerService.IntegrationTests;

/// <summary>
/// One live attempt per invocation: rolling restarts, duplicated and lost resumes, and a saga that cannot answer
/// claims never run work twice at once, lose it, or poison it. Real replicas, real broker, real workers; the
/// <c>marker</c> task leaves evidence of when each attempt ran.
/// </summary>
[Collection(BrokerCollection.Name)]
[Trait("Category", "Faults")]
public sealed class OwnershipTests(BrokerFixture broker, ITestOutputHelper output)
{
    static readonly TimeSpan Patience = TimeSpan.FromSeconds(120);

    [Theory]
    [InlineData(null)]
    [InlineData("00:01:00")]
    public async Task A_rolling_restart_never_runs_two_attempts_at_once_and_everything_completes_once(string? shutdownGrace)
    {
        await using var env = await RunnerEnvironment.StartAsync(broker, output, slots: 2, runners: 0);
        var markers = Path.Combine(env.StateDirectory, "markers.txt");
        var settings = new Dictionary<string, string> { ["Runner__WorkerEnvironment__RUNNER_MARKER_FILE"] = markers };
        if (shutdownGrace is not null)
            settings["Runner__ShutdownGrace"] = shutdownGrace;
        // One slot on A: the waiter pauses first (slot back), then the marker holds the slot and A's only prefetch, so
        // a second attempt can only start on B.
        var a = await env.StartRunnerAsync(1, settings, "replica-a");
        var dependency = NewId.NextGuid();
        var waiterId = NewId.NextGuid();
        var waiter = env.Bus.Client.RunAsync(new RunInvocation { InvocationId = waiterId, TaskName = "wait_for", Arguments = Json.Parse($"{{\"invocationId\":\"{dependency}\"}}") });
        await TestBus.PollAsync(() => env.Bus.Waiting.FirstOrDefault(w => w.InvocationId == waiterId), Patience, "the waiter's pause on replica A");
        var longRun = NewId.NextGuid();
        var marked = env.Bus.Client.RunAsync(new RunInvocation { InvocationId = longRun, TaskName = "marker", Arguments = Json.Parse("{\"ms\":40000}") });
        await env.Bus.WaitForStartedAsync(longRun, Patience);
        await env.StartRunnerAsync(2, settings, "replica-b");
        await Task.Delay(3000);

        await a.StopAsync(TimeSpan.FromSeconds(150));
        await env.Bus.Client.SubmitAsync(new RunInvocation { InvocationId = dependency, TaskName = "echo", Arguments = Json.Parse("{\"for\":\"the waiter\"}") });
        var results = await Task.WhenAll(marked, waiter).WaitAsync(Patience);
        Assert.All(results, r => Assert.Equal(InvocationStatus.Succeeded, r.Status));
        Assert.Equal("the waiter", results[1].Result!.Value.GetProperty("for").GetString());

        await env.WaitForSagaQuietAsync(TimeSpan.FromSeconds(20));
        await Task.Delay(1000);
        Assert.Single(env.Bus.Completed, c => c.InvocationId == longRun);
        Assert.Single(env.Bus.Completed, c => c.InvocationId == waiterId);
        var attempts = MarkerAttempts(markers, longRun);
        output.WriteLine(string.Join("\n", attempts.Select(x => $"attempt {x.Attempt} pid {x.Pid}: {x.Start} .. {x.Last} ended={x.Ended}")));
        Assert.Single(attempts, x => x.Ended);
        AssertNoOverlap(attempts);
    }

    [Fact]
    public async Task A_partitioned_replica_kills_its_own_workers_before_peers_run_them_again()
    {
        await using var env = await RunnerEnvironment.StartAsync(broker, output, slots: 2, runners: 0);
        env.VerifySagasOnDispose = false; // the partitioned replica's killed attempts stay in the history as they were
        await using var proxy = new TcpProxy(env.VirtualHost.AmqpUri);
        var markers = Path.Combine(env.StateDirectory, "markers.txt");
        var settings = new Dictionary<string, string>
        {
            ["Runner__WorkerEnvironment__RUNNER_MARKER_FILE"] = markers,
            ["Runner__StaleAfter"] = "00:00:08",
            ["Runner__HeartbeatInterval"] = "00:00:01",
            ["Runner__RecoveryInterval"] = "00:00:02",
        };
        var throughProxy = new Dictionary<string, string>(settings) { ["ConnectionStrings__RabbitMq"] = proxy.Through(env.VirtualHost.AmqpUri).ToString() };
        var a = await env.StartRunnerAsync(2, throughProxy, "partitioned-a");

        var longRun = NewId.NextGuid();
        var marked = env.Bus.Client.RunAsync(new RunInvocation { InvocationId = longRun, TaskName = "marker", Arguments = Json.Parse("{\"ms\":30000}") });
        await env.Bus.WaitForStartedAsync(longRun, Patience);
        var dependency = NewId.NextGuid();
        var waiterId = NewId.NextGuid();
        var waiter = env.Bus.Client.RunAsync(new RunInvocation { InvocationId = waiterId, TaskName = "wait_for", Arguments = Json.Parse($"{{\"invocationId\":\"{dependency}\"}}") });
        var paused = await TestBus.PollAsync(() => env.Bus.Waiting.FirstOrDefault(w => w.InvocationId == waiterId), Patience, "the waiter's pause on replica A");
        await env.StartRunnerAsync(2, settings, "partitioned-b");
        await Task.Delay(2000); // the marker has run past TrackAfter: the saga knows it

        proxy.Cut();
        var cut = DateTime.UtcNow;
        await TestBus.PollAsync(() => ProcessSignals.IsAlive(paused.ProcessId) ? null : "", TimeSpan.FromSeconds(30), "replica A killing its paused worker");
        output.WriteLine($"A fenced its workers {DateTime.UtcNow - cut} after the cut");
        await Task.Delay(TimeSpan.FromSeconds(30) - (DateTime.UtcNow - cut));
        proxy.Heal();

        await env.Bus.Client.SubmitAsync(new RunInvocation { InvocationId = dependency, TaskName = "echo", Arguments = Json.Parse("5") });
        var results = await Task.WhenAll(marked, waiter).WaitAsync(Patience);
        Assert.All(results, r => Assert.Equal(InvocationStatus.Succeeded, r.Status));
        await env.WaitForSagaQuietAsync(TimeSpan.FromSeconds(20));
        await Task.Delay(2000);
        Assert.Single(env.Bus.Completed, c => c.InvocationId == longRun);
        Assert.Single(env.Bus.Completed, c => c.InvocationId == waiterId);
        var attempts = MarkerAttempts(markers, longRun);
        output.WriteLine(string.Join("\n", attempts.Select(x => $"attempt {x.Attempt} pid {x.Pid}: {x.Start} .. {x.Last} ended={x.Ended}")));
        Assert.True(attempts.Count >= 2, "the marker ran again after the partition (a run killed by the fence, then another)");
        Assert.Single(attempts, x => x.Ended);
        AssertNoOverlap(attempts);
        Assert.Contains("No broker contact", a.Output);
    }

    [Fact]
    public async Task A_young_run_whose_delivery_is_lost_in_a_partition_is_not_run_elsewhere_while_it_lives()
    {
        await using var env = await RunnerEnvironment.StartAsync(broker, output, slots: 2, runners: 0);
        env.VerifySagasOnDispose = false; // the partitioned replica's fenced run leaves no completion of its own
        await using var proxy = new TcpProxy(env.VirtualHost.AmqpUri);
        var markers = Path.Combine(env.StateDirectory, "markers.txt");
        var settings = new Dictionary<string, string>
        {
            ["Runner__WorkerEnvironment__RUNNER_MARKER_FILE"] = markers,
            ["Runner__StaleAfter"] = "00:00:08",
            ["Runner__HeartbeatInterval"] = "00:00:01",
            ["Runner__RecoveryInterval"] = "00:00:02",
            // The saga never hears of A's run before the cut: its delivery is the only record of who runs it.
            ["Runner__TrackAfter"] = "00:05:00",
        };
        var throughProxy = new Dictionary<string, string>(settings) { ["ConnectionStrings__RabbitMq"] = proxy.Through(env.VirtualHost.AmqpUri).ToString() };
        await env.StartRunnerAsync(1, throughProxy, "young-a");
        var young = NewId.NextGuid();
        var marked = env.Bus.Client.RunAsync(new RunInvocation { InvocationId = young, TaskName = "marker", Arguments = Json.Parse("{\"ms\":15000}") });
        await env.Bus.WaitForStartedAsync(young, Patience);
        await env.StartRunnerAsync(2, settings, "young-b");
        await Task.Delay(1000);

        // The broker sees A's connection die and hands the unacknowledged delivery to B at once. A's worker lives on
        // until A fences itself; B must not start its copy before then.
        proxy.Cut();
        await Task.Delay(TimeSpan.FromSeconds(25));
        proxy.Heal();

        var result = await marked.WaitAsync(Patience);
        Assert.Equal(InvocationStatus.Succeeded, result.Status);
        await env.WaitForSagaQuietAsync(TimeSpan.FromSeconds(20));
        await Task.Delay(2000);
        Assert.Single(env.Bus.Completed, c => c.InvocationId == young);
        var attempts = MarkerAttempts(markers, young);
        output.WriteLine(string.Join("\n", attempts.Select(x => $"attempt {x.Attempt} pid {x.Pid}: {x.Start} .. {x.Last} ended={x.Ended}")));
        Assert.True(attempts.Count >= 2, "the run was cut off on A and ran again on B");
        Assert.Single(attempts, x => x.Ended);
        AssertNoOverlap(attempts);
    }

    [Fact]
    public async Task A_newer_attempt_that_lands_where_the_old_one_waits_replaces_it_instead_of_being_dropped_as_a_duplicate()
    {
        await using var env = await RunnerEnvironment.StartAsync(broker, output, slots: 1);
        env.VerifySagasOnDispose = false; // the test plays the recovery's reroute itself
        var dependency = NewId.NextGuid();
        var waiter = new RunInvocation { InvocationId = NewId.NextGuid(), TaskName = "wait_for", Arguments = Json.Parse($"{{\"invocationId\":\"{dependency}\"}}") };
        var completed = env.Bus.Client.WaitForCompletionAsync(waiter.InvocationId);
        await env.Bus.Client.SubmitAsync(waiter);
        var first = await TestBus.PollAsync(() => env.Bus.Waiting.FirstOrDefault(w => w.InvocationId == waiter.InvocationId), Patience, "attempt 1's pause");

        // As a recovery reroute would: attempt 2 of the same invocation reaches the replica that still holds attempt 1.
        await env.Bus.Client.SubmitAsync(waiter with { Attempt = 2 });
        var second = await TestBus.PollAsync(() => env.Bus.Waiting.FirstOrDefault(w => w.InvocationId == waiter.InvocationId && w.Attempt == 2), Patience, "attempt 2's pause");
        Assert.False(ProcessSignals.IsAlive(first.ProcessId), "attempt 1's worker is gone");
        Assert.NotEqual(first.ProcessId, second.ProcessId);

        await env.Bus.Client.SubmitAsync(new RunInvocation { InvocationId = dependency, TaskName = "echo", Arguments = Json.Parse("3") });
        var done = await completed.WaitAsync(Patience);
        Assert.Equal(InvocationStatus.Succeeded, done.Status);
        Assert.Equal(2, done.Attempt);
    }

    [Fact]
    public async Task A_duplicated_resume_writes_exactly_one_resume_line()
    {
        await using var env = await RunnerEnvironment.StartAsync(broker, output, slots: 2, runners: 0);
        env.VerifySagasOnDispose = false; // the test answers the wait itself, past the saga
        var settings = ShellWorker.Settings(env.StateDirectory);
        await env.StartRunnerAsync(2, settings, "resumes");

        var id = NewId.NextGuid();
        var counted = env.Bus.Client.RunAsync(new RunInvocation { InvocationId = id, TaskName = "count-resumes" });
        var wait = await TestBus.PollAsync(() => env.Bus.Waiting.FirstOrDefault(w => w.InvocationId == id), Patience, "the pause");
        // Both slots busy, so both copies arrive while the worker is paused and wait for a slot together.
        var sleepers = Enumerable.Range(0, 2).Select(_ => env.Bus.Client.RunAsync("nap", null)).ToArray();
        await TestBus.PollAsync(async () => (await env.Runner.GetStatusAsync()).SlotsBusy == 2 ? "" : null, Patience, "both slots busy");

        var resume = new ResumeInvocation
        {
            InvocationId = id,
            Attempt = wait.Attempt,
            WaitSequence = wait.WaitSequence,
            Results = [new DependencyOutcome { InvocationId = wait.WaitingFor[0], Status = InvocationStatus.Succeeded, Result = Json.Parse("1") }],
        };
        var endpoint = await env.Bus.Bus.GetSendEndpoint(new Uri("exchange:runner-instance-resumes"));
        await endpoint.Send(resume);
        await endpoint.Send(resume);

        var done = await counted.WaitAsync(Patience);
        await Task.WhenAll(sleepers).WaitAsync(Patience);
        output.WriteLine($"{done.Status}: {done.Result?.GetRawText()} {done.Error}");
        Assert.Equal(InvocationStatus.Succeeded, done.Status);
        Assert.Equal(1, done.Result!.Value.GetProperty("resumes").GetInt32());
    }

    [Fact]
    public async Task A_copy_of_a_resume_that_arrives_after_the_worker_ended_is_ignored_not_taken_for_a_lost_worker()
    {
        await using var env = await RunnerEnvironment.StartAsync(broker, output, slots: 2, runners: 0);
        await env.StartRunnerAsync(2, null, "late-resume");
        var dependency = NewId.NextGuid();
        var waiterId = NewId.NextGuid();
        var waiter = env.Bus.Client.RunAsync(new RunInvocation { InvocationId = waiterId, TaskName = "wait_for", Arguments = Json.Parse($"{{\"invocationId\":\"{dependency}\"}}") });
        var wait = await TestBus.PollAsync(() => env.Bus.Waiting.FirstOrDefault(w => w.InvocationId == waiterId), Patience, "the pause");
        await env.Bus.Client.SubmitAsync(new RunInvocation { InvocationId = dependency, TaskName = "echo", Arguments = Json.Parse("7") });
        Assert.Equal(InvocationStatus.Succeeded, (await waiter.WaitAsync(Patience)).Status);

        // The saga's resume sent again (a resend after a slow queue, a redelivered wait) reaches the replica after the
        // worker has ended. In the chaos run such a copy arrived while the completion was still on its way to the
        // saga; the replica took it for a worker lost with a restart and had the saga run the invocation again.
        var endpoint = await env.Bus.Bus.GetSendEndpoint(new Uri("exchange:runner-instance-late-resume"));
        await endpoint.Send(new ResumeInvocation
        {
            InvocationId = waiterId,
            Attempt = wait.Attempt,
            WaitSequence = wait.WaitSequence,
            Results = [new DependencyOutcome { InvocationId = dependency, Status = InvocationStatus.Succeeded, Result = Json.Parse("7") }],
        });
        await TestBus.PollAsync(() => env.Runner.Output.Contains($"Resume for invocation {waiterId}", StringComparison.Ordinal) ? "" : null, Patience, "the copy's log line");
        Assert.Contains("which has ended on this replica", env.Runner.Output);
        Assert.DoesNotContain("holds no such paused worker", env.Runner.Output);
        await env.WaitForSagaQuietAsync(TimeSpan.FromSeconds(10));
        Assert.Single(env.Bus.Completed, c => c.InvocationId == waiterId);
    }

    [Fact]
    public async Task A_lost_resume_is_sent_again_and_the_waiter_goes_on()
    {
        var settings = new Dictionary<string, string> { ["Runner__RecoveryInterval"] = "00:00:02" };
        await using var env = await RunnerEnvironment.StartAsync(broker, output, slots: 1, runners: 0);
        await env.StartRunnerAsync(1, settings, "lossy");
        // One wait first, so the saga's send to this replica's queue has declared its topology (a first send would
        // declare the binding again).
        Assert.Equal(InvocationStatus.Succeeded, (await env.Bus.Client.RunAsync("upper", Json.Parse("{\"text\":\"warm\"}")).WaitAsync(Patience)).Status);
        var dependency = NewId.NextGuid();
        var waiterId = NewId.NextGuid();
        var waiter = env.Bus.Client.RunAsync(new RunInvocation { InvocationId = waiterId, TaskName = "wait_for", Arguments = Json.Parse($"{{\"invocationId\":\"{dependency}\"}}") });
        await TestBus.PollAsync(() => env.Bus.Waiting.FirstOrDefault(w => w.InvocationId == waiterId), Patience, "the pause");
        await env.WaitForSagaQuietAsync(TimeSpan.FromSeconds(10));

        // Everything sent to the replica's own queue is dropped (confirmed, but unroutable): the saga's resume is lost.
        await broker.UnbindQueueAsync(env.VirtualHost.Name, "runner-instance-lossy");
        try
        {
            await env.Bus.Client.RunAsync(new RunInvocation { InvocationId = dependency, TaskName = "echo", Arguments = Json.Parse("7") }).WaitAsync(Patience);
            await env.WaitForSagaQuietAsync(TimeSpan.FromSeconds(10));
            await Task.Delay(1000);
            Assert.False(waiter.IsCompleted);
        }
        finally
        {
            await broker.BindQueueAsync(env.VirtualHost.Name, "runner-instance-lossy");
        }
        var healed = DateTime.UtcNow;
        var done = await waiter.WaitAsync(Patience);
        output.WriteLine($"resumed {DateTime.UtcNow - healed} after the queue was healed");
        Assert.Equal(InvocationStatus.Succeeded, done.Status);
        Assert.Equal(7, done.Result!.Value.GetInt32());
        Assert.True(DateTime.UtcNow - healed < TimeSpan.FromSeconds(2 * 2 + 3), $"took {DateTime.UtcNow - healed}");
    }

    [Fact]
    public async Task A_replica_whose_own_queue_stops_delivering_says_so_and_fails_liveness_until_it_delivers_again()
    {
        // Seen in the chaos runs: after a partition or a broker restart a replica came back with no consumer on its
        // instance queue; resumes never reached its paused workers while it looked healthy. Here the queue is unbound
        // from its exchange instead, so nothing sent to it arrives, while heartbeats still go out.
        var settings = new Dictionary<string, string> { ["Runner__StaleAfter"] = "00:00:04", ["Runner__HeartbeatInterval"] = "00:00:01" };
        await using var env = await RunnerEnvironment.StartAsync(broker, output, slots: 1, runners: 0);
        var replica = await env.StartRunnerAsync(1, settings, "deaf");
        using var http = new HttpClient { BaseAddress = replica.HttpBase, Timeout = TimeSpan.FromSeconds(10) };
        async Task<int> StatusOf(string path)
        {
            using var response = await http.GetAsync(path);
            return (int)response.StatusCode;
        }
        Assert.Equal(InvocationStatus.Succeeded, (await env.Bus.Client.RunAsync("echo", Json.Parse("1")).WaitAsync(Patience)).Status);
        await Task.Delay(6000); // longer than StaleAfter: a healthy queue keeps it live
        Assert.Equal(200, await StatusOf("health/live"));
        Assert.Equal(200, await StatusOf("health/ready"));

        await broker.UnbindQueueAsync(env.VirtualHost.Name, "runner-instance-deaf");
        try
        {
            await TestBus.PollAsync(async () => await StatusOf("health/live") == 503 ? "" : null, TimeSpan.FromSeconds(20), "liveness failing");
            Assert.Equal(503, await StatusOf("health/ready"));
            await TestBus.PollAsync(() => replica.Output.Contains("has delivered nothing for", StringComparison.Ordinal) ? "" : null, TimeSpan.FromSeconds(5), "the log line");
        }
        finally
        {
            await broker.BindQueueAsync(env.VirtualHost.Name, "runner-instance-deaf");
        }
        await TestBus.PollAsync(async () => await StatusOf("health/live") == 200 ? "" : null, TimeSpan.FromSeconds(20), "liveness back");
        Assert.Equal(200, await StatusOf("health/ready"));
    }

    [Fact]
    public async Task Claims_the_saga_cannot_answer_are_asked_again_and_never_poison_the_invocation()
    {
        await using var env = await RunnerEnvironment.StartAsync(broker, output, slots: 1, runners: 0);
        await env.StartRunnerAsync(1, new Dictionary<string, string> { ["Runner__RetryDelay"] = "00:00:00.200" });
        await env.Bus.Client.RunAsync("echo", null).WaitAsync(Patience); // the saga store exists

        // The saga store is locked for 45 s: every claim in that time goes unanswered (30 s request timeout).
        var locked = DateTime.UtcNow;
        var holdLock = Task.Run(async () =>
        {
            using var connection = new SqliteConnection($"Data Source={env.SagaDatabase};Pooling=False");
            await connection.OpenAsync();
            using (var begin = connection.CreateCommand())
            {
                begin.CommandText = "BEGIN EXCLUSIVE;";
                await begin.ExecuteNonQueryAsync();
            }
            await Task.Delay(TimeSpan.FromSeconds(45));
            using var end = connection.CreateCommand();
            end.CommandText = "ROLLBACK;";
            await end.ExecuteNonQueryAsync();
        });
        await Task.Delay(500);
        // A crash that is retried: its second attempt asks the saga for ownership first.
        var id = NewId.NextGuid();
        var crashed = env.Bus.Client.RunAsync(new RunInvocation { InvocationId = id, TaskName = "crash", Arguments = Json.Parse("{\"exitCode\":3}"), MaxAttempts = 2 });
        await holdLock;
        output.WriteLine($"store locked for {DateTime.UtcNow - locked}");
        var done = await crashed.WaitAsync(Patience);
        Assert.Equal(2, done.Attempt);
        Assert.Equal(InvocationErrorTypes.WorkerExited, done.Error!.Type);
        Assert.Null(await env.Bus.GetAsync("run-invocation_error"));
        Assert.Contains("did not answer the ownership claim", env.Runner.Output);
    }

    [Fact]
    public async Task A_rerouted_parent_reattaches_to_its_children_and_none_runs_a_second_time()
    {
        await using var env = await RunnerEnvironment.StartAsync(broker, output, slots: 2, runners: 0);
        env.VerifySagasOnDispose = false; // the killed replica leaves its history mid-flight on purpose
        var markers = Path.Combine(env.StateDirectory, "markers.txt");
        var settings = new Dictionary<string, string>
        {
            ["Runner__WorkerEnvironment__RUNNER_MARKER_FILE"] = markers,
            ["Runner__StaleAfter"] = "00:00:06",
            ["Runner__HeartbeatInterval"] = "00:00:01",
            ["Runner__RecoveryInterval"] = "00:00:02",
        };
        var a = await env.StartRunnerAsync(2, settings, "reattach-a");
        var parentId = NewId.NextGuid();
        var parent = env.Bus.Client.RunAsync(new RunInvocation
        {
            InvocationId = parentId,
            TaskName = "marker",
            Arguments = Json.Parse("{\"ms\":100,\"children\":[100,100,100,12000]}"),
        });
        await env.Bus.WaitForStartedAsync(parentId, Patience);
        await env.StartRunnerAsync(2, settings, "reattach-b");

        // Three children finished, the fourth running: then the parent's replica dies.
        await TestBus.PollAsync(() => env.Bus.Completed.Count(c => c.ParentInvocationId == parentId) >= 3 ? "" : null, Patience, "three finished children");
        var longChild = await TestBus.PollAsync(() => env.Bus.Started.FirstOrDefault(s => s.ParentInvocationId == parentId && env.Bus.Completed.All(c => c.InvocationId != s.InvocationId)),
            Patience, "the running child");
        var firstChildren = env.Bus.Started.Where(s => s.ParentInvocationId == parentId).Select(s => s.InvocationId).ToHashSet();
        await a.KillAsync();

        var done = await parent.WaitAsync(Patience);
        output.WriteLine($"{done.Status} attempt {done.Attempt}: {done.Result?.GetRawText()} {done.Error}");
        Assert.Equal(InvocationStatus.Succeeded, done.Status);
        Assert.Equal(2, done.Attempt);
        Assert.Equal(100 + 3 * 100 + 12000, done.Result!.Value.GetProperty("marked").GetInt64());

        // The second attempt asked for the same four children: no new child id, and each child ended exactly once.
        var children = File.ReadAllLines(markers).Select(l => l.Split(' ')).Where(f => f[1] != parentId.ToString()).ToList();
        var childIds = children.Select(f => Guid.Parse(f[1])).Distinct().ToList();
        output.WriteLine($"children seen in markers: {childIds.Count}; first attempt's: {firstChildren.Count}; long child {longChild.InvocationId}");
        Assert.Equal(4, childIds.Count);
        Assert.All(childIds, id => Assert.Single(children, f => f[0] == "end" && f[1] == id.ToString()));
        foreach (var id in childIds.Where(id => id != longChild.InvocationId))
            Assert.Single(children, f => f[0] == "start" && f[1] == id.ToString());
        AssertNoOverlap(MarkerAttempts(markers, longChild.InvocationId));
    }

    [Fact]
    public async Task A_sub_invocation_published_twice_runs_once_when_its_copies_reach_two_replicas()
    {
        await using var env = await RunnerEnvironment.StartAsync(broker, output, slots: 1, runners: 0);
        env.VerifySagasOnDispose = false; // the parent is made up: it never waits for the child
        var markers = Path.Combine(env.StateDirectory, "markers.txt");
        var settings = new Dictionary<string, string> { ["Runner__WorkerEnvironment__RUNNER_MARKER_FILE"] = markers };
        await env.StartRunnerAsync(1, settings, "copies-a");
        await env.StartRunnerAsync(1, settings, "copies-b");
        var child = new RunInvocation
        {
            InvocationId = NewId.NextGuid(),
            TaskName = "marker",
            Arguments = Json.Parse("{\"ms\":4000}"),
            ParentInvocationId = NewId.NextGuid(),
        };

        // As a publish retried after a lost confirm does: the same sub-invocation twice. Each replica has one slot and
        // takes one delivery at a time, so the second copy goes to the replica the first one does not occupy.
        await env.Bus.Client.SubmitAsync(child);
        var first = await env.Bus.WaitForStartedAsync(child.InvocationId, Patience);
        await env.Bus.Client.SubmitAsync(child);
        await TestBus.PollAsync(() => env.Bus.Completed.FirstOrDefault(c => c.InvocationId == child.InvocationId), Patience, "the first completion");
        // Time for a second run of 4 s to end and publish, had it started next to the first.
        await Task.Delay(7000);

        var runs = MarkerAttempts(markers, child.InvocationId);
        output.WriteLine($"first started on {first.RunnerInstance}; " + string.Join("; ", runs.Select(x => $"pid {x.Pid}: {x.Start}..{x.Last} ended={x.Ended}")));
        Assert.Single(runs);
        Assert.Single(env.Bus.Completed, c => c.InvocationId == child.InvocationId);
        Assert.Null(await env.Bus.GetAsync("run-invocation_error"));
    }

    /// <summary>One run of an invocation: one worker process (a redelivery taken over keeps its attempt number).</summary>
    sealed record AttemptRun(int Attempt, int Pid, long Start, long Last, bool Ended);

    static List<AttemptRun> MarkerAttempts(string file, Guid id)
    {
        var lines = File.ReadAllLines(file).Select(l => l.Split(' ')).Where(f => f.Length == 5 && f[1] == id.ToString()).ToList();
        return [.. lines.GroupBy(f => int.Parse(f[4], CultureInfo.InvariantCulture)).Select(g => new AttemptRun(
            int.Parse(g.First()[2], CultureInfo.InvariantCulture),
            g.Key,
            g.Where(f => f[0] == "start").Min(f => long.Parse(f[3], CultureInfo.InvariantCulture)),
            g.Max(f => long.Parse(f[3], CultureInfo.InvariantCulture)),
            g.Any(f => f[0] == "end"))).OrderBy(x => x.Start)];
    }

    static void AssertNoOverlap(List<AttemptRun> attempts)
    {
        for (var i = 0; i < attempts.Count; i++)
        {
            for (var j = i + 1; j < attempts.Count; j++)
            {
                var (x, y) = (attempts[i], attempts[j]);
                Assert.False(x.Start <= y.Last && y.Start <= x.Last,
                    $"attempt {x.Attempt} pid {x.Pid} ({x.Start}..{x.Last}) overlaps attempt {y.Attempt} pid {y.Pid} ({y.Start}..{y.Last})");
            }
        }
    }
}
