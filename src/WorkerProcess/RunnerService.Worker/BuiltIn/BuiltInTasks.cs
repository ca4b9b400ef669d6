using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace RunnerService.Worker.BuiltIn;

/// <summary>The tasks every stock worker knows; tests, the demo and the benchmarks use them.</summary>
public static class BuiltInTasks
{
    public static TaskRegistry AddBuiltInTasks(this TaskRegistry registry) => registry
        .Add("echo", Echo)
        .Add("sleep", Sleep)
        .Add("cpu", Cpu)
        .Add("fail", Fail)
        .Add("crash", Crash)
        .Add("fib", Fib)
        .Add("fanout", Fanout)
        .Add("upper", Upper)
        .Add("wait_for", WaitFor)
        .Add("cycle", Cycle)
        .Add("misbehave", Misbehave)
        .Add("env", Env)
        .Add("marker", Marker);

    /// <summary>Returns its arguments unchanged.</summary>
    static ValueTask<JsonNode?> Echo(TaskContext ctx) => ValueTask.FromResult(ToNode(ctx.Arguments));

    /// <summary>
    /// <c>{ms, progress?}</c>: sleeps, then returns <c>{slept: ms}</c>. With <c>progress</c> (a count) it sleeps in
    /// that many equal steps and reports its progress after each.
    /// </summary>
    static async ValueTask<JsonNode?> Sleep(TaskContext ctx)
    {
        var ms = ctx.GetInt32("ms");
        var steps = ctx.GetInt32("progress", 0);
        if (steps <= 0)
        {
            await Task.Delay(ms);
            return new JsonObject { ["slept"] = ms };
        }
        var clock = Stopwatch.StartNew();
        for (var i = 1; i <= steps; i++)
        {
            var due = TimeSpan.FromMilliseconds((double)ms * i / steps) - clock.Elapsed;
            if (due > TimeSpan.Zero)
                await Task.Delay(due);
            ctx.ReportProgress((double)i / steps, $"step {i} of {steps}");
        }
        return new JsonObject { ["slept"] = ms };
    }

    /// <summary>Where <c>marker</c> writes: configuration (the worker's environment), never the message.</summary>
    public const string MarkerFileVariable = "RUNNER_MARKER_FILE";

    /// <summary>
    /// <c>{ms, children?}</c>: runs for that long and leaves evidence of when it ran: appends <c>start</c>, a
    /// <c>tick</c> every 100 ms and <c>end</c> lines (<c>kind id attempt unix-ms pid</c>) to the file named by
    /// RUNNER_MARKER_FILE. A killed attempt's last tick tells when it stopped; tests and the chaos run check that no two
    /// attempts of one invocation overlap and that each ends once. With <c>children</c> (a list of ms) it first runs a
    /// <c>marker</c> sub-invocation for each and waits for all. Returns <c>{marked: total ms}</c>.
    /// </summary>
    static async ValueTask<JsonNode?> Marker(TaskContext ctx)
    {
        var ms = ctx.GetInt32("ms");
        var file = Environment.GetEnvironmentVariable(MarkerFileVariable)
            ?? throw new TaskFailedException($"{MarkerFileVariable} is not set for this worker (Runner:WorkerEnvironment)", "InvalidConfiguration");
        void Mark(string kind) => NativeMethods.AppendAtomically(file,
            $"{kind} {ctx.InvocationId} {ctx.Attempt} {DateTimeOffset.UtcNow.ToUnixTimeMilliseconds()} {Environment.ProcessId}\n");
        Mark("start");
        long total = ms;
        if (ctx.TryGetArgument("children", out var children) && children.ValueKind == JsonValueKind.Array)
        {
            var handles = children.EnumerateArray().Select(c => ctx.Invoke("marker", new JsonObject { ["ms"] = c.GetInt32() })).ToArray();
            var results = await ctx.WaitAll(handles);
            total += results.Sum(r => r.GetProperty("marked").GetInt64());
        }
        var until = DateTime.UtcNow.AddMilliseconds(ms);
        while (DateTime.UtcNow < until)
        {
            await Task.Delay(TimeSpan.FromMilliseconds(Math.Min(100, Math.Max(1, (until - DateTime.UtcNow).TotalMilliseconds))));
            Mark("tick");
        }
        Mark("end");
        return new JsonObject { ["marked"] = total };
    }

    /// <summary><c>{ms}</c>: keeps one core busy for that long, returns the loop count.</summary>
    static ValueTask<JsonNode?> Cpu(TaskContext ctx)
    {
        var ms = ctx.GetInt32("ms");
        var watch = Stopwatch.StartNew();
        long spins = 0;
        while (watch.ElapsedMilliseconds < ms)
        {
            for (var i = 0; i < 10_000; i++)
                spins++;
        }
        return ValueTask.FromResult<JsonNode?>(new JsonObject { ["spins"] = spins });
    }

    /// <summary><c>{message}</c>: fails with that message.</summary>
    static ValueTask<JsonNode?> Fail(TaskContext ctx) =>
        throw new TaskFailedException(ctx.GetString("message", "requested failure"));

    /// <summary><c>{exitCode}</c>: exits at once without writing a result.</summary>
    static ValueTask<JsonNode?> Crash(TaskContext ctx)
    {
        Environment.Exit(ctx.GetInt32("exitCode", 1));
        return ValueTask.FromResult<JsonNode?>(null);
    }

    /// <summary><c>{n}</c>: fib(n-1) + fib(n-2), each as a sub-invocation; n &lt; 2 returns n.</summary>
    static async ValueTask<JsonNode?> Fib(TaskContext ctx)
    {
        var n = ctx.GetInt32("n");
        if (n < 2)
            return n;
        var a = ctx.Invoke("fib", new JsonObject { ["n"] = n - 1 });
        var b = ctx.Invoke("fib", new JsonObject { ["n"] = n - 2 });
        var (x, y) = await ctx.WaitAll(a, b);
        return x.GetInt64() + y.GetInt64();
    }

    /// <summary>
    /// <c>{width, depth, bytes?}</c>: a tree of sub-invocations; a leaf returns 1 (or, with <c>bytes</c>, a string of that
    /// many 'x'), a node the sum of its children's numbers (string lengths counted). Large leaves make large resumes.
    /// </summary>
    static async ValueTask<JsonNode?> Fanout(TaskContext ctx)
    {
        var width = ctx.GetInt32("width");
        var depth = ctx.GetInt32("depth");
        var bytes = ctx.GetInt32("bytes", 0);
        if (depth <= 0 || width <= 0)
            return bytes > 0 ? new string('x', bytes) : 1;
        var children = Enumerable.Range(0, width)
            .Select(_ => ctx.Invoke("fanout", new JsonObject { ["width"] = width, ["depth"] = depth - 1, ["bytes"] = bytes }))
            .ToArray();
        var results = await ctx.WaitAll(children);
        return results.Sum(r => r.ValueKind == JsonValueKind.String ? CountOf('x', r.GetString()!) : r.GetInt64());
    }

    static long CountOf(char c, string text) => text.Count(x => x == c);

    /// <summary><c>{text}</c>: asks <c>echo</c> for the text and upper-cases what it returns.</summary>
    static async ValueTask<JsonNode?> Upper(TaskContext ctx)
    {
        var text = ctx.GetString("text");
        var echoed = await ctx.Wait(ctx.Invoke("echo", new JsonObject { ["text"] = text }));
        return echoed.GetProperty("text").GetString()!.ToUpperInvariant();
    }

    /// <summary>
    /// <c>{invocationId, catch?}</c>: waits for any invocation and returns its result. With <c>catch: true</c> a failure
    /// of that invocation is caught and returned as <c>{caught: {type, message}}</c> instead of failing this task.
    /// </summary>
    static async ValueTask<JsonNode?> WaitFor(TaskContext ctx)
    {
        var id = ctx.GetGuid("invocationId");
        var catchFailure = ctx.TryGetArgument("catch", out var flag) && flag.ValueKind == JsonValueKind.True;
        try
        {
            return ToNode(await ctx.WaitFor(id));
        }
        catch (InvocationFailedException ex) when (catchFailure)
        {
            return new JsonObject { ["caught"] = new JsonObject { ["type"] = ex.Error.Type, ["message"] = ex.Error.Message } };
        }
    }

    /// <summary>Starts <c>wait_for</c> on its own id and waits for it: a two-party cycle that must fail fast.</summary>
    static async ValueTask<JsonNode?> Cycle(TaskContext ctx)
    {
        var other = ctx.Invoke("wait_for", new JsonObject { ["invocationId"] = ctx.InvocationId.ToString() });
        return ToNode(await ctx.Wait(other));
    }

    static JsonNode? ToNode(JsonElement element) => element.ValueKind is JsonValueKind.Null or JsonValueKind.Undefined
        ? null
        : JsonSerializer.SerializeToNode(element, WorkerJsonContext.Default.JsonElement);

    /// <summary><c>{}</c>: the names of the environment variables the worker got (never their values).</summary>
    static ValueTask<JsonNode?> Env(TaskContext ctx)
    {
        var names = new JsonArray();
        foreach (var name in Environment.GetEnvironmentVariables().Keys.Cast<string>().Order(StringComparer.Ordinal))
            names.Add((JsonNode)JsonValue.Create(name));
        return ValueTask.FromResult<JsonNode?>(names);
    }

    /// <summary>
    /// <c>{mode, bytes?}</c>: breaks the protocol on purpose, for fault tests and demos. Modes: <c>garbage</c> (a
    /// non-JSON line on stdout), <c>longline</c> (one line of <c>bytes</c> bytes), <c>bigresult</c> (a result of
    /// <c>bytes</c> characters), <c>closestdout</c> (closes stdout and exits 0), <c>segfault</c> (dies by SIGSEGV), <c>hang</c> (never answers).
    /// </summary>
    static async ValueTask<JsonNode?> Misbehave(TaskContext ctx)
    {
        var mode = ctx.GetString("mode");
        var bytes = ctx.GetInt32("bytes", 1 << 20);
        var stdout = Console.OpenStandardOutput();
        switch (mode)
        {
            case "garbage":
                stdout.Write("this is not the protocol\n"u8);
                stdout.Flush();
                await Task.Delay(Timeout.Infinite);
                return null;
            case "longline":
                var line = new byte[bytes + 1];
                Array.Fill(line, (byte)'x');
                line[^1] = (byte)'\n';
                stdout.Write(line);
                stdout.Flush();
                await Task.Delay(Timeout.Infinite);
                return null;
            case "bigresult":
                return new string('r', bytes);
            case "closestdout":
                stdout.Close();
                await Task.Delay(200);
                Environment.Exit(0);
                return null;
            case "segfault":
                NativeMethods.DieBySignal(11);
                return null;
            case "hang":
                await Task.Delay(Timeout.Infinite);
                return null;
            default:
                throw new TaskFailedException($"unknown misbehave mode '{mode}'", "InvalidArguments");
        }
    }
}
