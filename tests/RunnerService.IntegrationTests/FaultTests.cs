using System.Diagnostics;
using System.Text;
using System.Text.RegularExpressions;
using MassTransit;
using RunnerService.Contracts;
using RunnerService.IntegrationTests.Infrastructure;
using Xunit.Abstractions;

namespace RunnerService.IntegrationTests;

/// <summary>Worker failures, timeouts, retries, shutdown, orphans and bad input over a real broker.</summary>
[Collection(BrokerCollection.Name)]
[Trait("Category", "Faults")]
public sealed partial class FaultTests(BrokerFixture broker, ITestOutputHelper output)
{
    static readonly TimeSpan Patience = TimeSpan.FromSeconds(90);

    static readonly Dictionary<string, string> SmallLimits = new() { ["Runner__MaxMessageBytes"] = "65536" };

    [Theory]
    [InlineData("crash", "{\"exitCode\":7}", InvocationErrorTypes.WorkerExited, "exit code 7")]
    [InlineData("misbehave", "{\"mode\":\"closestdout\"}", InvocationErrorTypes.WorkerExited, "closed its stdout without a result")]
    [InlineData("misbehave", "{\"mode\":\"garbage\"}", InvocationErrorTypes.ProtocolViolation, "'this is not the protocol'")]
    [InlineData("misbehave", "{\"mode\":\"longline\",\"bytes\":100000}", InvocationErrorTypes.ProtocolViolation, "longer than the limit of 65536 bytes, starting 'xxxx")]
    [InlineData("misbehave", "{\"mode\":\"bigresult\",\"bytes\":100000}", InvocationErrorTypes.ResultTooLarge, "limit of 65536 bytes")]
    [InlineData("misbehave", "{\"mode\":\"segfault\"}", InvocationErrorTypes.WorkerKilled, "SIGSEGV")]
    public async Task A_misbehaving_worker_fails_its_invocation_with_a_reason_and_frees_the_slot(string task, string arguments, string errorType, string reason)
    {
        await using var env = await RunnerEnvironment.StartAsync(broker, output, slots: 1, SmallLimits);
        var completed = await env.Bus.Client.RunAsync(task, Json.Parse(arguments)).WaitAsync(Patience);
        output.WriteLine($"{completed.Status}: {completed.Error}");
        Assert.Equal(InvocationStatus.Failed, completed.Status);
        Assert.Equal(errorType, completed.Error!.Type);
        Assert.Contains(reason, completed.Error.Message);
        await AssertSlotsFreeAsync(env.Runner);
        Assert.Equal(InvocationStatus.Succeeded, (await env.Bus.Client.RunAsync("echo", Json.Parse("1")).WaitAsync(Patience)).Status);
    }

    [Theory]
    [InlineData(9, "SIGKILL")]
    [InlineData(15, "SIGTERM")]
    public async Task A_worker_killed_by_a_signal_fails_with_the_signal_name(int signal, string name)
    {
        // SIGKILL is also what the kernel's out-of-memory killer sends (a real OOM kill needs a memory cgroup, not set
        // up here); a native crash (SIGSEGV) is covered by the misbehave 'segfault' case.
        await using var env = await RunnerEnvironment.StartAsync(broker, output, slots: 1);
        var id = NewId.NextGuid();
        var run = env.Bus.Client.RunAsync(new RunInvocation { InvocationId = id, TaskName = "sleep", Arguments = Json.Parse("{\"ms\":60000}") });
        var started = await env.Bus.WaitForStartedAsync(id, Patience);
        await Task.Delay(300); // let the worker get past its start-up
        Assert.True(ProcessSignals.Send(started.ProcessId, signal));
        var completed = await run.WaitAsync(Patience);
        output.WriteLine(completed.Error?.ToString());
        Assert.Equal(InvocationStatus.Failed, completed.Status);
        Assert.Equal(InvocationErrorTypes.WorkerKilled, completed.Error!.Type);
        Assert.Contains(name, completed.Error.Message);
        await AssertSlotsFreeAsync(env.Runner);
    }

    [Fact]
    public async Task A_worker_that_never_answers_is_killed_at_its_timeout_and_the_default_timeout_applies_too()
    {
        await using var env = await RunnerEnvironment.StartAsync(broker, output, slots: 1,
            new Dictionary<string, string> { ["Runner__DefaultTimeout"] = "00:00:02" });
        var watch = Stopwatch.StartNew();
        var explicitTimeout = await env.Bus.Client.RunAsync(new RunInvocation
        {
            InvocationId = NewId.NextGuid(),
            TaskName = "misbehave",
            Arguments = Json.Parse("{\"mode\":\"hang\"}"),
            Timeout = TimeSpan.FromSeconds(1),
        }).WaitAsync(Patience);
        Assert.Equal(InvocationStatus.TimedOut, explicitTimeout.Status);
        Assert.Equal(InvocationErrorTypes.TimedOut, explicitTimeout.Error!.Type);
        Assert.InRange(explicitTimeout.RunFor, TimeSpan.FromSeconds(0.9), TimeSpan.FromSeconds(10));

        var defaultTimeout = await env.Bus.Client.RunAsync("sleep", Json.Parse("{\"ms\":60000}")).WaitAsync(Patience);
        Assert.Equal(InvocationStatus.TimedOut, defaultTimeout.Status);
        Assert.True(watch.Elapsed < TimeSpan.FromSeconds(30));
        await AssertSlotsFreeAsync(env.Runner);
    }

    [Fact]
    public async Task Retryable_failures_are_retried_up_to_max_attempts_and_task_errors_are_not()
    {
        await using var env = await RunnerEnvironment.StartAsync(broker, output, slots: 1,
            new Dictionary<string, string> { ["Runner__RetryDelay"] = "00:00:00.200" });
        var crash = NewId.NextGuid();
        var crashed = await env.Bus.Client.RunAsync(new RunInvocation
        {
            InvocationId = crash,
            TaskName = "crash",
            Arguments = Json.Parse("{\"exitCode\":3}"),
            MaxAttempts = 3,
        }).WaitAsync(Patience);
        Assert.Equal(InvocationStatus.Failed, crashed.Status);
        Assert.Equal(3, crashed.Attempt);
        Assert.Equal([1, 2, 3], env.Bus.Started.Where(s => s.InvocationId == crash).Select(s => s.Attempt).Order().ToArray());
        await env.Bus.WaitForCompletedAsync(crash, Patience);
        await Task.Delay(500);
        Assert.Single(env.Bus.Completed, c => c.InvocationId == crash);

        var fail = NewId.NextGuid();
        var failed = await env.Bus.Client.RunAsync(new RunInvocation
        {
            InvocationId = fail,
            TaskName = "fail",
            Arguments = Json.Parse("{\"message\":\"not worth retrying\"}"),
            MaxAttempts = 3,
        }).WaitAsync(Patience);
        Assert.Equal(1, failed.Attempt);
        Assert.Single(env.Bus.Started, s => s.InvocationId == fail);
    }

    [Fact]
    public async Task A_killed_service_leaves_none_of_its_running_or_paused_workers_alive()
    {
        await using var env = await RunnerEnvironment.StartAsync(broker, output, slots: 2);
        env.VerifySagasOnDispose = false; // the killed replica's invocations are left mid-flight on purpose
        var paused = NewId.NextGuid();
        await env.Bus.Client.SubmitAsync(new RunInvocation { InvocationId = paused, TaskName = "wait_for", Arguments = Json.Parse($"{{\"invocationId\":\"{NewId.NextGuid()}\"}}") });
        var wait = await TestBus.PollAsync(() => env.Bus.Waiting.FirstOrDefault(w => w.InvocationId == paused), Patience, "the paused worker");
        var running = new[] { NewId.NextGuid(), NewId.NextGuid() };
        foreach (var id in running)
            await env.Bus.Client.SubmitAsync(new RunInvocation { InvocationId = id, TaskName = "sleep", Arguments = Json.Parse("{\"ms\":60000}") });
        var pids = new List<int> { wait.ProcessId };
        foreach (var id in running)
            pids.Add((await env.Bus.WaitForStartedAsync(id, Patience)).ProcessId);
        Assert.All(pids, pid => Assert.True(ProcessSignals.IsAlive(pid)));
        Assert.Equal('T', ProcessSignals.State(wait.ProcessId));

        await env.Runner.KillAsync();
        var watch = Stopwatch.StartNew();
        while (pids.Any(ProcessSignals.IsAlive) && watch.Elapsed < TimeSpan.FromSeconds(2))
            await Task.Delay(10);
        Assert.DoesNotContain(pids, ProcessSignals.IsAlive);
        output.WriteLine($"all {pids.Count} workers gone {watch.ElapsedMilliseconds} ms after the kill");
    }

    [Fact]
    public async Task Sigterm_kills_and_reroutes_running_and_paused_work_and_after_restart_everything_completes()
    {
        var settings = new Dictionary<string, string> { ["Runner__ShutdownGrace"] = "00:00:01" };
        await using var env = await RunnerEnvironment.StartAsync(broker, output, slots: 1, settings);
        var dependency = NewId.NextGuid();
        var parent = env.Bus.Client.RunAsync("wait_for", Json.Parse($"{{\"invocationId\":\"{dependency}\"}}"));
        var parentWait = await TestBus.PollAsync(() => env.Bus.Waiting.FirstOrDefault(w => w.WaitingFor.Contains(dependency)), Patience, "the parent's wait");
        var sleepId = NewId.NextGuid();
        var sleeper = env.Bus.Client.RunAsync(new RunInvocation { InvocationId = sleepId, TaskName = "sleep", Arguments = Json.Parse("{\"ms\":4000}") });
        var sleeping = await env.Bus.WaitForStartedAsync(sleepId, Patience);
        var queued = env.Bus.Client.RunAsync("echo", Json.Parse("{\"queued\":true}"));
        await Task.Delay(300);

        await env.Runner.StopAsync(TimeSpan.FromSeconds(60));
        output.WriteLine(env.Runner.Output.Split('\n').Where(l => l.Contains("Stopping with", StringComparison.Ordinal) || l.Contains("pid ", StringComparison.Ordinal)).Aggregate("", (a, l) => a + l + "\n"));
        Assert.Contains("Stopping with 2 worker(s) left", env.Runner.Output);
        Assert.Contains($"pid {parentWait.ProcessId} alive paused", env.Runner.Output);
        Assert.Contains($"waits for {dependency}", env.Runner.Output);
        Assert.False(ProcessSignals.IsAlive(parentWait.ProcessId));
        Assert.False(ProcessSignals.IsAlive(sleeping.ProcessId));
        Assert.False(sleeper.IsCompleted);
        Assert.False(queued.IsCompleted);

        await env.StartRunnerAsync(slots: 1, settings);
        await env.Bus.Client.SubmitAsync(new RunInvocation { InvocationId = dependency, TaskName = "echo", Arguments = Json.Parse("{\"for\":\"the parent\"}") });
        var results = await Task.WhenAll(parent, sleeper, queued).WaitAsync(Patience);
        Assert.All(results, r => Assert.Equal(InvocationStatus.Succeeded, r.Status));
        Assert.Equal("the parent", results[0].Result!.Value.GetProperty("for").GetString());
        Assert.Equal(2, results[0].Attempt);
        Assert.Equal(2, results[1].Attempt);
        // The event may reach the test's event queue after the reply reached RunAsync: wait for it, then for any copy.
        await env.Bus.WaitForCompletedAsync(sleepId, Patience);
        await Task.Delay(500);
        Assert.Equal(1, env.Bus.Completed.Count(c => c.InvocationId == sleepId));
    }

    [Fact]
    public async Task Workers_get_a_minimal_environment_and_credentials_never_reach_the_logs()
    {
        var vhostUser = $"runner-{Guid.NewGuid():N}"[..20];
        var password = $"s3cret-{Guid.NewGuid():N}";
        await using var env = await RunnerEnvironment.StartAsync(broker, output, slots: 1, runners: 0);
        var credentialed = await broker.CreateUserAsync(vhostUser, password, env.VirtualHost.Name);
        await env.StartRunnerAsync(slots: 1, new Dictionary<string, string> { ["ConnectionStrings__RabbitMq"] = credentialed.ToString() });

        var names = await env.Bus.Client.RunAsync("env", null).WaitAsync(Patience);
        var variables = names.Result!.Value.EnumerateArray().Select(e => e.GetString()!).ToArray();
        output.WriteLine(string.Join(", ", variables));
        Assert.DoesNotContain(variables, v => v.StartsWith("ConnectionStrings", StringComparison.OrdinalIgnoreCase) || v.StartsWith("Runner__", StringComparison.Ordinal));
        Assert.Contains("RUNNER_PARENT_PID", variables);

        await env.Bus.Client.RunAsync("fail", Json.Parse("{\"message\":\"log something\"}")).WaitAsync(Patience);
        var (_, statusOut, _) = await Cli.RunAsync(credentialed, "status", Guid.NewGuid().ToString());
        await env.Runner.StopAsync(TimeSpan.FromSeconds(30));
        Assert.DoesNotContain(password, env.Runner.Output);
        Assert.DoesNotContain(password, statusOut);
    }

    [Fact]
    public async Task Bad_input_lands_in_the_error_queue_and_duplicates_never_run_twice_at_once()
    {
        await using var env = await RunnerEnvironment.StartAsync(broker, output, slots: 2,
            new Dictionary<string, string> { ["Runner__MaxArgumentsBytes"] = "1024" });

        var oversized = await env.Bus.Client.RunAsync("echo", Json.Parse($"\"{new string('a', 5000)}\"")).WaitAsync(Patience);
        Assert.Equal(InvocationErrorTypes.InvalidInvocation, oversized.Error!.Type);
        Assert.Contains("Runner:MaxArgumentsBytes", oversized.Error.Message);
        var faulted = await TestBus.PollAsync(async () => await env.Bus.GetAsync("run-invocation_error"), Patience, "the oversized message in the error queue");
        Assert.Contains("1024", Encoding.UTF8.GetString((byte[])faulted.BasicProperties.Headers!["MT-Fault-Message"]!));

        var envelope = "{\"messageId\":\"" + Guid.NewGuid() + "\",\"messageType\":[\"urn:message:Somebody.Else:UnknownThing\"],\"message\":{\"x\":1}}";
        await env.Bus.PublishRawAsync("run-invocation", Encoding.UTF8.GetBytes(envelope), "application/vnd.masstransit+json");
        // Not skipped in silence: another message type on the invocation queue is bad input like any other.
        var unknownType = await TestBus.PollAsync(async () => await env.Bus.GetAsync("run-invocation_error"), Patience, "the unknown message type in the error queue");
        Assert.Contains("urn:message:Somebody.Else:UnknownThing", Encoding.UTF8.GetString((byte[])unknownType.BasicProperties.Headers!["MT-Fault-Message"]!));
        Assert.Null(await env.Bus.GetAsync("run-invocation_skipped"));

        var duplicate = new RunInvocation { InvocationId = NewId.NextGuid(), TaskName = "sleep", Arguments = Json.Parse("{\"ms\":1500}") };
        var completion = env.Bus.Client.WaitForCompletionAsync(duplicate.InvocationId);
        await env.Bus.Client.SubmitAsync(duplicate);
        await env.Bus.Client.SubmitAsync(duplicate);
        Assert.Equal(InvocationStatus.Succeeded, (await completion.WaitAsync(Patience)).Status);
        await Task.Delay(2500);
        Assert.Single(env.Bus.Started, s => s.InvocationId == duplicate.InvocationId);
        Assert.Single(env.Bus.Completed, c => c.InvocationId == duplicate.InvocationId);
        Assert.False(env.Runner.HasExited);
    }

    [Fact]
    public async Task Max_attempts_over_100_a_timeout_over_max_timeout_and_a_bad_task_name_each_fail_as_invalid_without_a_worker()
    {
        await using var env = await RunnerEnvironment.StartAsync(broker, output, slots: 1);
        var cases = new (RunInvocation Invocation, string Reason)[]
        {
            (new RunInvocation { InvocationId = NewId.NextGuid(), TaskName = "echo", MaxAttempts = 1000 }, "MaxAttempts 1000 is over the limit of 100"),
            (new RunInvocation { InvocationId = NewId.NextGuid(), TaskName = "echo", Timeout = TimeSpan.FromDays(60) },
                "Timeout 60.00:00:00 is over the limit of 7.00:00:00 (Runner:MaxTimeout)"),
            (new RunInvocation { InvocationId = NewId.NextGuid(), TaskName = "rm -rf /" },
                "TaskName \"rm -rf /\" is not a valid task name (letters, digits and _ - . : /, starting with a letter or digit, at most 200 characters)"),
        };
        foreach (var (invocation, reason) in cases)
        {
            var completed = await env.Bus.Client.RunAsync(invocation).WaitAsync(Patience);
            output.WriteLine($"{completed.Status}: {completed.Error}");
            Assert.Equal(InvocationStatus.Failed, completed.Status);
            Assert.Equal(InvocationErrorTypes.InvalidInvocation, completed.Error!.Type);
            Assert.Equal(reason, completed.Error.Message);
        }
        var faults = new List<string>();
        while (faults.Count < cases.Length)
        {
            var faulted = await TestBus.PollAsync(async () => await env.Bus.GetAsync("run-invocation_error"), Patience, "the invalid messages in the error queue");
            faults.Add(Encoding.UTF8.GetString((byte[])faulted.BasicProperties.Headers!["MT-Fault-Message"]!));
        }
        Assert.All(cases, c => Assert.Contains(faults, f => f.Contains(c.Reason, StringComparison.Ordinal)));
        Assert.DoesNotContain(env.Bus.Started, s => cases.Any(c => c.Invocation.InvocationId == s.InvocationId));
        Assert.Single(env.Bus.Completed, c => c.InvocationId == cases[0].Invocation.InvocationId);
    }

    [Fact]
    public async Task A_thousand_distinct_unknown_task_names_leave_at_most_max_task_labels_plus_one_task_label_values_on_metrics()
    {
        const int maxTaskLabels = 20;
        const int names = 1000;
        await using var env = await RunnerEnvironment.StartAsync(broker, output, slots: 4,
            new Dictionary<string, string> { ["Runner__MaxTaskLabels"] = maxTaskLabels.ToString(System.Globalization.CultureInfo.InvariantCulture) });
        var watch = Stopwatch.StartNew();
        var ids = new HashSet<Guid>();
        for (var i = 0; i < names; i++)
        {
            var invocation = new RunInvocation { InvocationId = NewId.NextGuid(), TaskName = $"unknown-{i}" };
            ids.Add(invocation.InvocationId);
            await env.Bus.Client.SubmitAsync(invocation);
        }
        await env.Bus.TestWaitAsync(() => env.Bus.Completed.Count(c => ids.Contains(c.InvocationId)) >= names, TimeSpan.FromMinutes(5));
        output.WriteLine($"{names} unknown tasks completed in {watch.Elapsed}");
        Assert.All(env.Bus.Completed.Where(c => ids.Contains(c.InvocationId)), c => Assert.Equal(InvocationErrorTypes.UnknownTask, c.Error!.Type));

        var metrics = await MetricsText.ScrapeAsync(env.Runner.HttpBase);
        var taskLabels = TaskLabel().Matches(metrics.Text).Select(m => m.Groups[1].Value).Distinct().ToList();
        output.WriteLine($"{taskLabels.Count} task label values, {metrics.Text.Length} bytes of /metrics");
        Assert.InRange(taskLabels.Count, 1, maxTaskLabels + 1);
        Assert.Contains("other", taskLabels);
        // Nothing is lost under the cap: every run is still counted, the ones past it as task="other".
        Assert.Equal(names, metrics.Sum("runner_invocations_completed_total"));
        Assert.Equal(names - maxTaskLabels, metrics.Value("runner_invocations_completed_total", ("task", "other"), ("status", "failed")));
    }

    [GeneratedRegex("[{,]task=\"([^\"]*)\"")]
    private static partial Regex TaskLabel();

    static async Task AssertSlotsFreeAsync(RunnerProcess runner)
    {
        var status = await runner.GetSettledStatusAsync();
        Assert.Equal(0, status.SlotsBusy);
        Assert.Equal(0, status.WorkersAlive);
    }
}
