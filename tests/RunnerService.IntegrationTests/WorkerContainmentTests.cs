using System.Diagnostics;
using System.Text.RegularExpressions;
using MassTransit;
using RunnerService.Contracts;
using RunnerService.IntegrationTests.Infrastructure;
using Xunit.Abstractions;

namespace RunnerService.IntegrationTests;

/// <summary>
/// A worker is someone else's code: whatever it does (return megabytes, leave grandchildren behind, ignore its stdin or
/// SIGTERM, print endless lines), the invocation ends in bounded time with a precise reason, the slot comes back and
/// nothing is left behind. Real runner, real broker, real worker processes (the stock worker and a shell-script one).
/// </summary>
[Collection(BrokerCollection.Name)]
[Trait("Category", "Faults")]
public sealed partial class WorkerContainmentTests(BrokerFixture broker, ITestOutputHelper output)
{
    static readonly TimeSpan Patience = TimeSpan.FromSeconds(90);

    [Fact]
    public async Task Resumes_larger_than_a_pipe_buffer_reach_the_worker_on_one_slot()
    {
        await using var env = await RunnerEnvironment.StartAsync(broker, output, slots: 1);
        var text = string.Concat(Enumerable.Repeat("abcdefghij", 12_000)); // 120 KB
        var upper = await env.Bus.Client.RunAsync("upper", Json.Parse($"{{\"text\":\"{text}\"}}")).WaitAsync(Patience);
        Assert.Equal(InvocationStatus.Succeeded, upper.Status);
        Assert.Equal(text.ToUpperInvariant(), upper.Result!.Value.GetString());

        // Four children of 256 KB each: a resume line of more than 1 MB.
        var fanout = await env.Bus.Client.RunAsync("fanout", Json.Parse("{\"width\":4,\"depth\":1,\"bytes\":262144}")).WaitAsync(Patience);
        Assert.Equal(InvocationStatus.Succeeded, fanout.Status);
        Assert.Equal(4 * 262144, fanout.Result!.Value.GetInt64());
        await AssertSlotsFreeAsync(env.Runner);
    }

    [Fact]
    public async Task A_worker_that_never_reads_its_stdin_after_a_wait_fails_within_the_deadline_and_frees_its_slot()
    {
        await using var env = await RunnerEnvironment.StartAsync(broker, output, slots: 1, runners: 0);
        var settings = ShellWorker.Settings(env.StateDirectory);
        settings["Runner__StdinTimeout"] = "00:00:02";
        await env.StartRunnerAsync(1, settings);

        var deaf = await env.Bus.Client.RunAsync("deaf-waiter", null).WaitAsync(Patience);
        output.WriteLine(deaf.Error?.ToString());
        Assert.Equal(InvocationStatus.Failed, deaf.Status);
        Assert.Equal(InvocationErrorTypes.ProtocolViolation, deaf.Error!.Type);
        Assert.Contains("stdin", deaf.Error.Message);
        Assert.True(deaf.RunFor < TimeSpan.FromSeconds(10), $"ran for {deaf.RunFor}");
        await AssertSlotsFreeAsync(env.Runner);
        Assert.Equal(InvocationStatus.Succeeded, (await env.Bus.Client.RunAsync("quick", null).WaitAsync(Patience)).Status);
    }

    [Theory]
    [InlineData("orphan-crash", null, InvocationErrorTypes.WorkerExited)]
    [InlineData("orphan-hang", 1, InvocationErrorTypes.TimedOut)]
    public async Task A_grandchild_holding_the_pipes_never_holds_the_invocation_and_dies_with_its_group(string task, int? timeoutSeconds, string errorType)
    {
        const int killGraceSeconds = 2;
        await using var env = await RunnerEnvironment.StartAsync(broker, output, slots: 1, runners: 0);
        var settings = ShellWorker.Settings(env.StateDirectory);
        settings["Runner__KillGrace"] = $"00:00:0{killGraceSeconds}";
        await env.StartRunnerAsync(1, settings);

        var watch = Stopwatch.StartNew();
        var completed = await env.Bus.Client.RunAsync(new RunInvocation
        {
            InvocationId = NewId.NextGuid(),
            TaskName = task,
            Timeout = timeoutSeconds is { } s ? TimeSpan.FromSeconds(s) : null,
        }).WaitAsync(Patience);
        var took = watch.Elapsed;
        output.WriteLine($"{completed.Status} after {took}: {completed.Error}");
        Assert.Equal(errorType, completed.Error!.Type);
        Assert.True(took < TimeSpan.FromSeconds((timeoutSeconds ?? 0) + killGraceSeconds + 2 + 1), $"took {took}");

        var grandchild = GrandchildPid(env.Runner.Output);
        await AssertGoneAsync(grandchild, TimeSpan.FromSeconds(2));
        Assert.Empty(GroupMembers(completed.ProcessId));
        await AssertSlotsFreeAsync(env.Runner);
    }

    [Fact]
    public async Task A_timeout_sends_sigterm_first_so_the_task_can_clean_up_and_sigkill_after_the_kill_grace()
    {
        await using var env = await RunnerEnvironment.StartAsync(broker, output, slots: 1, runners: 0);
        var settings = ShellWorker.Settings(env.StateDirectory);
        settings["Runner__KillGrace"] = "00:00:03";
        await env.StartRunnerAsync(1, settings);

        var trapped = await env.Bus.Client.RunAsync(new RunInvocation { InvocationId = NewId.NextGuid(), TaskName = "trap-term", Timeout = TimeSpan.FromSeconds(1) }).WaitAsync(Patience);
        Assert.Equal(InvocationStatus.TimedOut, trapped.Status);
        await TestBus.PollAsync(() => env.Runner.Output.Contains($"cleanup-done {trapped.ProcessId}", StringComparison.Ordinal) ? "" : null,
            TimeSpan.FromSeconds(5), "the task's clean-up line in the runner log");
        Assert.True(trapped.RunFor < TimeSpan.FromSeconds(3), $"a clean exit on SIGTERM took {trapped.RunFor}");

        var watch = Stopwatch.StartNew();
        var stubborn = await env.Bus.Client.RunAsync(new RunInvocation { InvocationId = NewId.NextGuid(), TaskName = "ignore-term", Timeout = TimeSpan.FromSeconds(1) }).WaitAsync(Patience);
        var took = watch.Elapsed;
        output.WriteLine($"ignore-term: {stubborn.Status} after {took}: {stubborn.Error}");
        Assert.Equal(InvocationStatus.TimedOut, stubborn.Status);
        Assert.InRange(took, TimeSpan.FromSeconds(1 + 3 - 0.5), TimeSpan.FromSeconds(1 + 3 + 2 + 1));
        Assert.Empty(GroupMembers(stubborn.ProcessId));
        await AssertSlotsFreeAsync(env.Runner);
    }

    [Fact]
    public async Task After_two_thousand_invocations_the_service_holds_no_more_descriptors_than_when_idle()
    {
        await using var env = await RunnerEnvironment.StartAsync(broker, output, slots: 2, runners: 0);
        await env.StartRunnerAsync(2, ShellWorker.Settings(env.StateDirectory));
        await RunQuickAsync(env, 50);
        await env.Runner.GetSettledStatusAsync();
        var baseline = env.Runner.OpenDescriptors();

        await RunQuickAsync(env, 2000);
        await env.Runner.GetSettledStatusAsync();
        await env.WaitForSagaQuietAsync(TimeSpan.FromSeconds(30));
        var after = env.Runner.OpenDescriptors();
        output.WriteLine($"open descriptors: {baseline} idle after warm-up, {after} after 2,000 invocations");
        Assert.InRange(after, 0, baseline + 16);
    }

    [Fact]
    public async Task With_a_low_open_file_limit_a_deep_tree_still_completes_on_two_slots()
    {
        await using var env = await RunnerEnvironment.StartAsync(broker, output, slots: 2, runners: 0);
        await env.StartRunnerAsync(2, openFileLimit: 512);
        var fib = await env.Bus.Client.RunAsync("fib", Json.Parse("{\"n\":12}")).WaitAsync(TimeSpan.FromMinutes(4));
        output.WriteLine($"{fib.Status} {fib.Error}");
        Assert.Equal(InvocationStatus.Succeeded, fib.Status);
        Assert.Equal(144, fib.Result!.Value.GetInt64());
        var status = await env.Runner.GetSettledStatusAsync();
        output.WriteLine($"peak live workers {status.PeakWorkersAlive}");
    }

    [Fact]
    public async Task A_50_MB_stderr_line_without_a_newline_is_cut_not_buffered()
    {
        await using var env = await RunnerEnvironment.StartAsync(broker, output, slots: 1, runners: 0);
        await env.StartRunnerAsync(1, ShellWorker.Settings(env.StateDirectory));
        await RunQuickAsync(env, 20);
        var before = env.Runner.StatusKiB("VmHWM");

        var flood = await env.Bus.Client.RunAsync("stderr-flood", null).WaitAsync(Patience);
        Assert.Equal(InvocationStatus.Succeeded, flood.Status);
        var after = env.Runner.StatusKiB("VmHWM");
        output.WriteLine($"peak RSS {before / 1024} MiB before, {after / 1024} MiB after the flood");
        Assert.InRange(after - before, long.MinValue, 64 * 1024);
        Assert.Contains("line cut", env.Runner.Output);
    }

    [Fact]
    public async Task With_a_worker_user_a_task_can_read_neither_the_runners_environment_nor_the_saga_store()
    {
        await using var env = await RunnerEnvironment.StartAsync(broker, output, slots: 1, runners: 0);
        // The worker's files must be readable by that user; the test's own folders are private to root.
        var worker = Path.Combine(env.StateDirectory, "worker");
        CopyDirectory(Path.GetDirectoryName(ExampleWorkerPath)!, worker);
        var readable = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute | UnixFileMode.GroupRead
            | UnixFileMode.GroupExecute | UnixFileMode.OtherRead | UnixFileMode.OtherExecute;
        if (OperatingSystem.IsLinux())
            File.SetUnixFileMode(env.StateDirectory, readable);
        var probe = Json.Parse($"{{\"paths\":[\"/proc/{{runner}}/environ\",\"{env.SagaDatabase}\"]}}");

        // As the service's own user, the task reads both: the check below can fail.
        var own = await env.StartRunnerAsync(1, new Dictionary<string, string> { ["Runner__WorkerCommand"] = Path.Combine(worker, "ExampleWorker") });
        await env.Bus.Client.RunAsync("echo", null).WaitAsync(Patience); // the saga store exists from here on
        var asService = await env.Bus.Client.RunAsync("read-files", probe).WaitAsync(Patience);
        output.WriteLine($"as the service's user: {asService.Result}");
        Assert.All(asService.Result!.Value.EnumerateObject(), p => Assert.Equal("readable", p.Value.GetString()));
        await own.StopAsync(TimeSpan.FromSeconds(30));

        await env.StartRunnerAsync(1, new Dictionary<string, string>
        {
            ["Runner__WorkerCommand"] = Path.Combine(worker, "ExampleWorker"),
            ["Runner__WorkerUser"] = "nobody",
        });
        var asNobody = await env.Bus.Client.RunAsync("read-files", probe).WaitAsync(Patience);
        output.WriteLine($"as nobody: {asNobody.Result}");
        Assert.Equal(InvocationStatus.Succeeded, asNobody.Status);
        var outcomes = asNobody.Result!.Value.EnumerateObject().ToList();
        Assert.Equal(2, outcomes.Count);
        Assert.All(outcomes, p => Assert.Contains("denied", p.Value.GetString(), StringComparison.OrdinalIgnoreCase));
        Assert.Contains("Workers run as user nobody", env.Runners[^1].Output);
    }

    static string ExampleWorkerPath => Path.Combine(RepoPaths.Root, "tests", "ExampleWorker", "bin", RepoPaths.Configuration, "net10.0", "ExampleWorker");

    static void CopyDirectory(string from, string to)
    {
        Directory.CreateDirectory(to);
        foreach (var file in Directory.GetFiles(from))
            File.Copy(file, Path.Combine(to, Path.GetFileName(file)));
        foreach (var dir in Directory.GetDirectories(from))
            CopyDirectory(dir, Path.Combine(to, Path.GetFileName(dir)));
    }

    static async Task RunQuickAsync(RunnerEnvironment env, int count)
    {
        var runs = Enumerable.Range(0, count).Select(_ => env.Bus.Client.RunAsync("quick", null)).ToArray();
        var done = await Task.WhenAll(runs).WaitAsync(TimeSpan.FromMinutes(5));
        Assert.All(done, c => Assert.Equal(InvocationStatus.Succeeded, c.Status));
    }

    static int GrandchildPid(string runnerOutput)
    {
        var match = GrandchildLine().Match(runnerOutput);
        Assert.True(match.Success, "the worker's 'grandchild PID' stderr line is not in the runner log");
        return int.Parse(match.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture);
    }

    [GeneratedRegex(@"grandchild (\d+)")]
    private static partial Regex GrandchildLine();

    static async Task AssertGoneAsync(int pid, TimeSpan within)
    {
        var watch = Stopwatch.StartNew();
        while (ProcessSignals.IsAlive(pid) && watch.Elapsed < within)
            await Task.Delay(50);
        Assert.False(ProcessSignals.IsAlive(pid), $"process {pid} is still alive");
    }

    /// <summary>Live processes whose process group is <paramref name="pgid"/>, read from /proc.</summary>
    static List<int> GroupMembers(int pgid)
    {
        var members = new List<int>();
        foreach (var dir in Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(dir), out var pid))
                continue;
            try
            {
                var stat = File.ReadAllText(Path.Combine(dir, "stat"));
                var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
                if (fields[0] is not ("Z" or "X") && int.Parse(fields[2], System.Globalization.CultureInfo.InvariantCulture) == pgid)
                    members.Add(pid);
            }
            catch (IOException)
            {
            }
        }
        return members;
    }

    static async Task AssertSlotsFreeAsync(RunnerProcess runner)
    {
        var status = await runner.GetSettledStatusAsync();
        Assert.Equal(0, status.SlotsBusy);
        Assert.Equal(0, status.WorkersAlive);
    }
}
