// A custom worker: the built-in tasks plus three of our own. The runner starts this executable once per
// invocation (Runner:WorkerCommand points at it); WorkerHost speaks the protocol on stdin/stdout.
using System.Text.Json.Nodes;
using RunnerService.Worker;
using RunnerService.Worker.BuiltIn;

return await WorkerHost.RunAsync(tasks => tasks
    .AddBuiltInTasks()

    // greet {name} -> "Hello, NAME!"
    .Add("greet", ctx =>
    {
        var name = ctx.GetString("name");
        ctx.Log($"greeting {name}"); // stderr: the runner logs it under this invocation
        return ValueTask.FromResult<JsonNode?>($"Hello, {name}!");
    })

    // word-count {text} -> {words: N}
    .Add("word-count", ctx =>
    {
        var words = ctx.GetString("text").Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries).Length;
        return ValueTask.FromResult<JsonNode?>(new JsonObject { ["words"] = words });
    })

    // shout {text} -> "TEXT!": runs the built-in "upper" as a sub-invocation in its own process and waits for it.
    // While it waits, this process is paused (SIGSTOP) and holds no slot.
    .Add("shout", async ctx =>
    {
        var upper = ctx.Invoke("upper", new JsonObject { ["text"] = ctx.GetString("text") });
        var result = await ctx.Wait(upper); // throws InvocationFailedException if "upper" failed
        return result.GetString() + "!";
    })

    // read-files {paths: [...]} -> {path: "readable" | "<error message>"}: what this worker's user may read (the
    // runner's environment, the saga store); the isolation tests use it.
    .Add("read-files", ctx =>
    {
        var outcome = new JsonObject();
        foreach (var item in ctx.Arguments.GetProperty("paths").EnumerateArray())
        {
            var path = item.GetString()!.Replace("{runner}", Environment.GetEnvironmentVariable("RUNNER_PARENT_PID"), StringComparison.Ordinal);
            try
            {
                using var file = File.OpenRead(path);
                _ = file.ReadByte();
                outcome[path] = "readable";
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
            {
                outcome[path] = ex.Message;
            }
        }
        return ValueTask.FromResult<JsonNode?>(outcome);
    }));
