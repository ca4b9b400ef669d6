using System.Collections.Concurrent;
using System.Diagnostics;
using System.Text;
using System.Text.Json;
using MassTransit;
using RunnerService.Contracts;
using RunnerService.IntegrationTests.Infrastructure;
using Xunit.Abstractions;

namespace RunnerService.IntegrationTests;

/// <summary>The foundation slice over a real broker with real worker processes.</summary>
[Collection(BrokerCollection.Name)]
[Trait("Category", "Integration")]
public sealed class FoundationTests(BrokerFixture broker, ITestOutputHelper output)
{
    static readonly TimeSpan Patience = TimeSpan.FromSeconds(60);

    [Fact]
    public async Task Fifty_echoes_each_run_in_their_own_process_with_never_more_children_than_slots()
    {
        const int slots = 3;
        await using var env = await RunnerEnvironment.StartAsync(broker, output, slots);

        // An outside view: sample the service's children from /proc while the work runs.
        var maxChildren = 0;
        using var stopSampling = new CancellationTokenSource();
        var sampler = Task.Run(async () =>
        {
            while (!stopSampling.IsCancellationRequested)
            {
                maxChildren = Math.Max(maxChildren, env.Runner.ChildPids().Distinct().Count());
                await Task.Delay(1);
            }
        });

        var runs = Enumerable.Range(0, 50)
            .Select(i => env.Bus.Client.RunAsync("echo", Json.Parse($"{{\"i\":{i},\"text\":\"item {i}\"}}")))
            .ToArray();
        var completions = await Task.WhenAll(runs).WaitAsync(Patience);
        stopSampling.Cancel();
        await sampler;

        for (var i = 0; i < completions.Length; i++)
        {
            Assert.Equal(InvocationStatus.Succeeded, completions[i].Status);
            Assert.Equal(i, completions[i].Result!.Value.GetProperty("i").GetInt32());
            Assert.Equal($"item {i}", completions[i].Result!.Value.GetProperty("text").GetString());
        }
        Assert.Equal(50, completions.Select(c => c.ProcessId).Distinct().Count());
        Assert.All(completions, c => Assert.True(c.ProcessId > 0));

        var status = await env.Runner.GetSettledStatusAsync();
        output.WriteLine($"max children seen in /proc: {maxChildren}; service peak alive {status.PeakWorkersAlive}, peak slots busy {status.PeakSlotsBusy}");
        Assert.InRange(maxChildren, 1, slots);
        Assert.InRange(status.PeakWorkersAlive, 2, slots); // at least 2: the work really ran in parallel
        Assert.Equal(0, status.WorkersAlive);
        Assert.Equal(0, status.SlotsBusy);
    }

    [Fact]
    public async Task The_jit_stock_worker_still_runs_plain_and_waiting_invocations_and_the_start_log_says_it_is_the_slow_one()
    {
        // The other tests run the default, the Native AOT worker when it is published; this keeps the JIT path covered.
        await using var env = await RunnerEnvironment.StartAsync(broker, output, slots: 1,
            new Dictionary<string, string> { ["Runner__WorkerCommand"] = StockWorker.JitPath });

        var echo = await env.Bus.Client.RunAsync("echo", Json.Parse("{\"jit\":true}")).WaitAsync(Patience);
        var fib = await env.Bus.Client.RunAsync("fib", Json.Parse("{\"n\":4}")).WaitAsync(Patience); // 9 processes, 4 waits

        Assert.Equal(InvocationStatus.Succeeded, echo.Status);
        Assert.True(echo.Result!.Value.GetProperty("jit").GetBoolean());
        Assert.Equal(InvocationStatus.Succeeded, fib.Status);
        Assert.Equal(3, fib.Result!.Value.GetInt32());
        var notes = env.Runner.Output.Split('\n').Where(l => l.Contains("JIT build of the stock worker", StringComparison.Ordinal)).ToArray();
        var note = Assert.Single(notes);
        Assert.Contains(StockWorker.JitPath, note, StringComparison.Ordinal);
        Assert.Contains("bash deploy/local/publish-aot-worker.sh", note, StringComparison.Ordinal);
    }

    [AotWorkerFact]
    public async Task The_default_worker_is_the_native_aot_build_next_to_the_service()
    {
        await using var env = await RunnerEnvironment.StartAsync(broker, output, slots: 1);
        var expected = StockWorker.AotPath;

        var run = env.Bus.Client.RunAsync("sleep", Json.Parse("{\"ms\":3000}"));
        static string? Executable(int pid)
        {
            try { return File.ResolveLinkTarget($"/proc/{pid}/exe", returnFinalTarget: false)?.FullName; }
            catch (IOException) { return null; }
        }
        // Until it execs the worker, the child is a fork of the service (dotnet), then setsid.
        var notYet = new[] { Executable(env.Runner.Pid), "/usr/bin/setsid", "/bin/setsid" };
        string? executable = null;
        var watch = Stopwatch.StartNew();
        while (executable is null && watch.Elapsed < Patience)
        {
            executable = env.Runner.ChildPids().Select(Executable).FirstOrDefault(e => e is not null && !notYet.Contains(e));
            await Task.Delay(10);
        }
        Assert.Equal(InvocationStatus.Succeeded, (await run.WaitAsync(Patience)).Status);

        output.WriteLine($"worker executable: {executable}");
        Assert.Equal(expected, executable);
        var line = env.Runner.Output.Split('\n').Single(l => l.Contains("Workers: ", StringComparison.Ordinal));
        Assert.Contains($"Workers: {expected}", line, StringComparison.Ordinal);
        Assert.DoesNotContain("JIT", line, StringComparison.Ordinal);
    }

    [Fact]
    public async Task With_two_slots_the_broker_hands_out_two_messages_and_keeps_the_rest_ready()
    {
        const int total = 10;
        await using var env = await RunnerEnvironment.StartAsync(broker, output, slots: 2);
        var ids = Enumerable.Range(0, total).Select(_ => NewId.NextGuid()).ToArray();
        foreach (var id in ids)
            await env.Bus.Client.SubmitAsync(new RunInvocation { InvocationId = id, TaskName = "sleep", Arguments = Json.Parse("{\"ms\":500}") });

        // Delivered-but-unfinished = total - ready - completed. Completions are read 100 ms after the ready count, so a
        // message acked just before the count cannot look delivered; a larger prefetch would show up at once.
        var maxDelivered = 0;
        var maxReady = 0u;
        var watch = Stopwatch.StartNew();
        while (env.Bus.Completed.Count < total && watch.Elapsed < Patience)
        {
            var ready = await env.Bus.ReadyMessagesAsync("run-invocation");
            await Task.Delay(100);
            var delivered = total - (int)ready - env.Bus.Completed.Count;
            maxDelivered = Math.Max(maxDelivered, delivered);
            maxReady = Math.Max(maxReady, ready);
        }
        output.WriteLine($"max delivered at once: {maxDelivered}, max ready: {maxReady}");
        Assert.Equal(total, env.Bus.Completed.Count(c => ids.Contains(c.InvocationId) && c.Status == InvocationStatus.Succeeded));
        Assert.InRange(maxDelivered, 1, 2);
        Assert.True(maxReady >= total - 2 - 2, $"ready messages should stay in the queue while 2 run; max ready was {maxReady}");
        Assert.Equal(2, (await env.Runner.GetStatusAsync()).PeakSlotsBusy);
    }

    [Fact]
    public async Task Fail_crash_and_unknown_task_complete_Failed_with_a_reason_that_names_the_cause()
    {
        await using var env = await RunnerEnvironment.StartAsync(broker, output, slots: 2);

        var failed = await env.Bus.Client.RunAsync("fail", Json.Parse("{\"message\":\"disk on fire\"}")).WaitAsync(Patience);
        Assert.Equal(InvocationStatus.Failed, failed.Status);
        Assert.Equal(InvocationErrorTypes.TaskError, failed.Error!.Type);
        Assert.Equal("disk on fire", failed.Error.Message);

        var crashed = await env.Bus.Client.RunAsync("crash", Json.Parse("{\"exitCode\":3}")).WaitAsync(Patience);
        Assert.Equal(InvocationStatus.Failed, crashed.Status);
        Assert.Equal(InvocationErrorTypes.WorkerExited, crashed.Error!.Type);
        Assert.Contains("exit code 3", crashed.Error.Message);

        var unknown = await env.Bus.Client.RunAsync("no-such-task", null).WaitAsync(Patience);
        Assert.Equal(InvocationStatus.Failed, unknown.Status);
        Assert.Equal(InvocationErrorTypes.UnknownTask, unknown.Error!.Type);
        Assert.Contains("'no-such-task'", unknown.Error.Message);

        Assert.Equal(0, (await env.Runner.GetSettledStatusAsync()).SlotsBusy);
    }

    [Fact]
    public async Task A_malformed_message_goes_to_the_error_queue_with_the_reason_and_the_next_one_still_runs()
    {
        await using var env = await RunnerEnvironment.StartAsync(broker, output, slots: 1);

        await env.Bus.PublishRawAsync("run-invocation", Encoding.UTF8.GetBytes("{\"message\": {not json"), "application/vnd.masstransit+json");
        var faulted = await TestBus.PollAsync(async () => await env.Bus.GetAsync("run-invocation_error"), Patience, "a message in run-invocation_error");
        var headers = faulted.BasicProperties.Headers!;
        var reason = Encoding.UTF8.GetString((byte[])headers["MT-Fault-Message"]!);
        output.WriteLine($"fault reason: {reason}");
        Assert.False(string.IsNullOrWhiteSpace(reason));
        Assert.Equal("{\"message\": {not json", Encoding.UTF8.GetString(faulted.Body.Span));

        var next = await env.Bus.Client.RunAsync("echo", Json.Parse("{\"after\":\"poison\"}")).WaitAsync(Patience);
        Assert.Equal(InvocationStatus.Succeeded, next.Status);
        Assert.False(env.Runner.HasExited);
    }

    [Fact]
    public async Task A_message_without_a_task_name_fails_once_and_lands_in_the_error_queue()
    {
        await using var env = await RunnerEnvironment.StartAsync(broker, output, slots: 1);
        var id = NewId.NextGuid();
        var completion = await env.Bus.Client.RunAsync(new RunInvocation { InvocationId = id, TaskName = "" }).WaitAsync(Patience);
        Assert.Equal(InvocationStatus.Failed, completion.Status);
        Assert.Equal(InvocationErrorTypes.InvalidInvocation, completion.Error!.Type);
        Assert.Contains("TaskName", completion.Error.Message);

        var faulted = await TestBus.PollAsync(async () => await env.Bus.GetAsync("run-invocation_error"), Patience, "a message in run-invocation_error");
        Assert.Contains("TaskName", Encoding.UTF8.GetString((byte[])faulted.BasicProperties.Headers!["MT-Fault-Message"]!));
    }

    [Fact]
    public async Task A_killed_service_leaves_no_worker_behind_and_its_invocation_runs_again_after_restart()
    {
        await using var env = await RunnerEnvironment.StartAsync(broker, output, slots: 1);
        var id = NewId.NextGuid();
        var completion = env.Bus.Client.RunAsync(new RunInvocation { InvocationId = id, TaskName = "sleep", Arguments = Json.Parse("{\"ms\":3000}") });
        var started = await env.Bus.WaitForStartedAsync(id, Patience);
        Assert.True(ProcessSignals.IsAlive(started.ProcessId));

        await env.Runner.KillAsync();
        var gone = Stopwatch.StartNew();
        while (ProcessSignals.IsAlive(started.ProcessId) && gone.Elapsed < TimeSpan.FromSeconds(2))
            await Task.Delay(10);
        Assert.False(ProcessSignals.IsAlive(started.ProcessId), $"worker pid {started.ProcessId} outlived its killed service");

        await env.StartRunnerAsync(slots: 1);
        var completed = await completion.WaitAsync(Patience);
        Assert.Equal(InvocationStatus.Succeeded, completed.Status);
        Assert.NotEqual(started.ProcessId, completed.ProcessId);
        Assert.Equal(2, env.Bus.Started.Count(s => s.InvocationId == id));
    }

    [Fact]
    public async Task A_warm_pool_hands_a_pre_spawned_worker_to_each_invocation_and_never_reuses_one()
    {
        await using var env = await RunnerEnvironment.StartAsync(broker, output, slots: 1,
            new Dictionary<string, string> { ["Runner__WarmWorkers"] = "2" });
        var used = new HashSet<int>();
        for (var i = 0; i < 4; i++)
        {
            // Two idle workers wait (seen from outside, in /proc); the next invocation runs in one of them.
            var idle = await TestBus.PollAsync(() => env.Runner.ChildPids().Distinct().ToArray() is { Length: 2 } pids ? pids : null,
                Patience, "two idle pre-spawned workers");
            var done = await env.Bus.Client.RunAsync("echo", Json.Parse($"{{\"i\":{i}}}")).WaitAsync(Patience);
            Assert.Equal(i, done.Result!.Value.GetProperty("i").GetInt32());
            Assert.Contains(done.ProcessId, idle);
            Assert.True(used.Add(done.ProcessId), $"pid {done.ProcessId} ran two invocations");
            // It exits after its one invocation (the completion is published while it exits).
            await TestBus.PollAsync(() => ProcessSignals.IsAlive(done.ProcessId) ? null : "gone", TimeSpan.FromSeconds(2), $"the exit of pid {done.ProcessId}");
        }
    }

    [Fact]
    public async Task Cli_submit_wait_prints_the_succeeded_completion_as_one_json_line()
    {
        await using var env = await RunnerEnvironment.StartAsync(broker, output, slots: 1);
        var (exitCode, stdout, stderr) = await Cli.RunAsync(env.VirtualHost.AmqpUri, "submit", "echo", "{\"x\":1}", "--wait");
        output.WriteLine(stderr);
        Assert.Equal(0, exitCode);
        var line = Assert.Single(stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        using var doc = JsonDocument.Parse(line);
        Assert.Equal("Succeeded", doc.RootElement.GetProperty("status").GetString());
        Assert.Equal("{\"x\":1}", doc.RootElement.GetProperty("result").GetRawText());

        var (failExit, failOut, _) = await Cli.RunAsync(env.VirtualHost.AmqpUri, "submit", "fail", "{\"message\":\"nope\"}", "--wait");
        Assert.NotEqual(0, failExit);
        Assert.Contains("\"Failed\"", failOut);
    }

    [Fact]
    public async Task Cli_submit_count_runs_them_all_and_prints_a_summary()
    {
        await using var env = await RunnerEnvironment.StartAsync(broker, output, slots: 2);
        var (exitCode, stdout, _) = await Cli.RunAsync(env.VirtualHost.AmqpUri, "submit", "echo", "{\"n\":1}", "--count", "12");
        output.WriteLine(stdout);
        Assert.Equal(0, exitCode);
        Assert.Contains("completed: 12", stdout);
        Assert.Contains("succeeded: 12", stdout);
        Assert.Contains("failed: 0", stdout);
        Assert.Contains("p99", stdout);
        // The test's own subscription gets the same events on another queue, so it may lag the CLI by a moment.
        await TestBus.PollAsync(() => env.Bus.Completed.Count >= 12 ? "all" : null, Patience, "12 completions on the test bus");
        Assert.Equal(12, env.Bus.Completed.Count);
    }
}
