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
    }));
