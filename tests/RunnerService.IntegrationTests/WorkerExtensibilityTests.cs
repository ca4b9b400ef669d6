using System.Text.Json;
using RunnerService.Contracts;
using RunnerService.IntegrationTests.Infrastructure;
using Xunit.Abstractions;

namespace RunnerService.IntegrationTests;

/// <summary>
/// Users add tasks without forking: a runner configured with <c>Runner:WorkerCommand</c> runs their own worker —
/// a C# executable built on the worker SDK (tests/ExampleWorker) or a worker in another language that speaks the
/// protocol (docs/examples/python_worker.py). Real runner processes, real broker, real worker processes.
/// </summary>
[Collection(BrokerCollection.Name)]
public sealed class WorkerExtensibilityTests(BrokerFixture broker, ITestOutputHelper output)
{
    static readonly TimeSpan Patience = TimeSpan.FromSeconds(60);

    /// <summary>The ExampleWorker apphost, built by the ProjectReference in this test project with the same configuration.</summary>
    static string ExampleWorkerPath => Path.Combine(RepoPaths.Root, "tests", "ExampleWorker", "bin", RepoPaths.Configuration, "net10.0", "ExampleWorker");

    static string PythonWorkerScript => Path.Combine(RepoPaths.Root, "docs", "examples", "python_worker.py");

    static Dictionary<string, string> ExampleWorkerSettings()
    {
        Assert.True(File.Exists(ExampleWorkerPath), $"ExampleWorker is not built at {ExampleWorkerPath}");
        return new Dictionary<string, string> { ["Runner__WorkerCommand"] = ExampleWorkerPath };
    }

    static Dictionary<string, string> PythonWorkerSettings()
    {
        Assert.True(File.Exists(PythonWorkerScript), $"{PythonWorkerScript} is missing");
        return new Dictionary<string, string>
        {
            ["Runner__WorkerCommand"] = RepoPaths.Python3(),
            ["Runner__WorkerArguments__0"] = PythonWorkerScript,
        };
    }

    [Fact]
    [Trait("Category", "Integration")]
    public async Task A_custom_csharp_worker_runs_its_own_tasks_and_the_built_in_ones()
    {
        await using var env = await RunnerEnvironment.StartAsync(broker, output, slots: 2, ExampleWorkerSettings());

        var greet = await env.Bus.Client.RunAsync("greet", Json.Parse("{\"name\":\"Ada\"}")).WaitAsync(Patience);
        Assert.Equal(InvocationStatus.Succeeded, greet.Status);
        Assert.Equal("Hello, Ada!", greet.Result!.Value.GetString());
        Assert.True(greet.ProcessId > 0);

        var count = await env.Bus.Client.RunAsync("word-count", Json.Parse("{\"text\":\"  the quick\\tbrown\\nfox  \"}")).WaitAsync(Patience);
        Assert.Equal(InvocationStatus.Succeeded, count.Status);
        Assert.Equal(4, count.Result!.Value.GetProperty("words").GetInt32());

        // AddBuiltInTasks() keeps the stock tasks available next to the custom ones.
        var echo = await env.Bus.Client.RunAsync("echo", Json.Parse("{\"k\":[1,2]}")).WaitAsync(Patience);
        Assert.Equal(InvocationStatus.Succeeded, echo.Status);
        Assert.True(JsonElement.DeepEquals(Json.Parse("{\"k\":[1,2]}"), echo.Result!.Value), $"echo returned {echo.Result!.Value.GetRawText()}");

        // A missing argument fails the task with the SDK's InvalidArguments error, not a crash.
        var bad = await env.Bus.Client.RunAsync("greet", Json.Parse("{}")).WaitAsync(Patience);
        Assert.Equal(InvocationStatus.Failed, bad.Status);
        Assert.Equal("InvalidArguments", bad.Error!.Type);
        Assert.Contains("'name'", bad.Error.Message);

        var unknown = await env.Bus.Client.RunAsync("no-such-task", null).WaitAsync(Patience);
        Assert.Equal(InvocationStatus.Failed, unknown.Status);
        Assert.Equal(InvocationErrorTypes.UnknownTask, unknown.Error!.Type);
        Assert.Contains("greet", unknown.Error.Message); // the worker lists what it knows

        // ctx.Log writes to stderr, which the runner logs under the invocation.
        await TestBus.PollAsync(() => env.Runner.Output.Contains("greeting Ada", StringComparison.Ordinal) ? "" : null,
            TimeSpan.FromSeconds(10), "the greet task's stderr line in the runner log");
    }

    [Fact]
    [Trait("Category", "Waits")]
    public async Task A_custom_csharp_task_can_invoke_and_wait_for_a_built_in_one_with_a_single_slot()
    {
        await using var env = await RunnerEnvironment.StartAsync(broker, output, slots: 1, ExampleWorkerSettings());

        // shout -> upper -> echo: three processes, two of them paused while the next one runs in the only slot.
        var shout = await env.Bus.Client.RunAsync("shout", Json.Parse("{\"text\":\"hello\"}")).WaitAsync(Patience);
        Assert.Equal(InvocationStatus.Succeeded, shout.Status);
        Assert.Equal("HELLO!", shout.Result!.Value.GetString());

        var upper = await env.Bus.WaitForCompletedAsync(
            (await TestBus.PollAsync(() => env.Bus.Started.FirstOrDefault(s => s.TaskName == "upper"), Patience, "InvocationStarted of upper")).InvocationId,
            Patience);
        Assert.Equal(shout.InvocationId, upper.ParentInvocationId);
        Assert.Equal("HELLO", upper.Result!.Value.GetString());
        Assert.NotEqual(shout.ProcessId, upper.ProcessId);
        Assert.Equal(1, (await env.Runner.GetStatusAsync()).PeakSlotsBusy);
    }

    [Fact]
    [Trait("Category", "Integration")]
    public async Task A_python_worker_written_from_the_protocol_alone_runs_tasks_and_reports_errors()
    {
        await using var env = await RunnerEnvironment.StartAsync(broker, output, slots: 2, PythonWorkerSettings());

        var add = await env.Bus.Client.RunAsync("py-add", Json.Parse("{\"a\":2,\"b\":3}")).WaitAsync(Patience);
        Assert.Equal(InvocationStatus.Succeeded, add.Status);
        Assert.Equal(5, add.Result!.Value.GetInt32());

        const string arguments = "{\"text\":\"h\u00e9llo \u2713\",\"list\":[1,2.5,true,null],\"nested\":{\"a\":{}}}";
        var echo = await env.Bus.Client.RunAsync("py-echo", Json.Parse(arguments)).WaitAsync(Patience);
        Assert.Equal(InvocationStatus.Succeeded, echo.Status);
        Assert.Equal("h\u00e9llo \u2713", echo.Result!.Value.GetProperty("text").GetString());
        Assert.True(JsonElement.DeepEquals(Json.Parse(arguments), echo.Result.Value), $"py-echo returned {echo.Result.Value.GetRawText()}");

        var unknown = await env.Bus.Client.RunAsync("no-such-task", Json.Parse("{}")).WaitAsync(Patience);
        Assert.Equal(InvocationStatus.Failed, unknown.Status);
        Assert.Equal(InvocationErrorTypes.UnknownTask, unknown.Error!.Type);
        Assert.Contains("'no-such-task'", unknown.Error.Message);

        var invalid = await env.Bus.Client.RunAsync("py-add", Json.Parse("{\"a\":\"two\",\"b\":3}")).WaitAsync(Patience);
        Assert.Equal(InvocationStatus.Failed, invalid.Status);
        Assert.Equal("InvalidArguments", invalid.Error!.Type);

        // stderr is the task log; the structured 'log' message reaches the runner log too.
        await TestBus.PollAsync(() => env.Runner.Output.Contains($"py-echo: returning the arguments of {echo.InvocationId}", StringComparison.OrdinalIgnoreCase) ? "" : null,
            TimeSpan.FromSeconds(10), "the python worker's stderr line in the runner log");
        await TestBus.PollAsync(() => env.Runner.Output.Contains("py-echo says hello through a log message", StringComparison.Ordinal) ? "" : null,
            TimeSpan.FromSeconds(10), "the python worker's log message in the runner log");
        // The completion is published while the worker exits: allow the exit a moment.
        Assert.Equal(0, (await env.Runner.GetSettledStatusAsync()).WorkersAlive);
    }

    [Fact]
    [Trait("Category", "Waits")]
    public async Task A_python_worker_computes_fib_through_sub_invocations_and_waits_with_a_single_slot()
    {
        await using var env = await RunnerEnvironment.StartAsync(broker, output, slots: 1, PythonWorkerSettings());

        var fib = await env.Bus.Client.RunAsync("py-fib", Json.Parse("{\"n\":6}")).WaitAsync(TimeSpan.FromSeconds(120));
        Assert.True(fib.Status == InvocationStatus.Succeeded, $"py-fib ended {fib.Status}: {fib.Error}");
        Assert.Equal(8, fib.Result!.Value.GetInt32());

        // fib(6) as a call tree is 25 invocations, each in its own python process, with one slot between them.
        var all = await TestBus.PollAsync(() =>
        {
            var done = env.Bus.Completed.Where(c => c.TaskName == "py-fib").ToList();
            return done.Count >= 25 ? done : null;
        }, TimeSpan.FromSeconds(10), "25 py-fib completions");
        Assert.Equal(25, all.Select(c => c.InvocationId).Distinct().Count());
        Assert.All(all, c => Assert.Equal(InvocationStatus.Succeeded, c.Status));
        Assert.Equal(25, all.Select(c => c.ProcessId).Distinct().Count());
        Assert.NotEmpty(env.Bus.Waiting);
        var status = await env.Runner.GetSettledStatusAsync();
        Assert.Equal(1, status.PeakSlotsBusy);
        Assert.Equal(0, status.WorkersAlive);
    }
}
