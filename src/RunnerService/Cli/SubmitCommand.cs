using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using MassTransit;
using Microsoft.Extensions.DependencyInjection;
using RunnerService.Contracts;
using RunnerService.Contracts.Client;

namespace RunnerService.Cli;

/// <summary><c>submit TASK [JSON] [--wait] [--count N] [--timeout S]</c>.</summary>
static class SubmitCommand
{
    public static async Task<int> RunAsync(string[] args, CancellationToken cancellationToken)
    {
        string? task = null;
        string? json = null;
        var wait = false;
        var tree = false;
        var count = 0;
        TimeSpan? timeout = null;
        for (var i = 0; i < args.Length; i++)
        {
            switch (args[i])
            {
                case "--wait":
                    wait = true;
                    break;
                case "--tree":
                    tree = true;
                    wait = true;
                    break;
                case "--count":
                    count = i + 1 < args.Length && int.TryParse(args[++i], CultureInfo.InvariantCulture, out var n) && n > 0
                        ? n : throw new CliUsageException("--count needs a positive number");
                    break;
                case "--timeout":
                    timeout = i + 1 < args.Length && double.TryParse(args[++i], CultureInfo.InvariantCulture, out var s) && s > 0
                        ? TimeSpan.FromSeconds(s) : throw new CliUsageException("--timeout needs a positive number of seconds");
                    break;
                default:
                    if (args[i].StartsWith("--", StringComparison.Ordinal))
                        throw new CliUsageException($"unknown option {args[i]}");
                    if (task is null)
                        task = args[i];
                    else if (json is null)
                        json = args[i];
                    else
                        throw new CliUsageException($"unexpected argument '{args[i]}'");
                    break;
            }
        }
        if (task is null)
            throw new CliUsageException("submit needs a task name");
        JsonElement? arguments = null;
        if (json is not null)
        {
            try
            {
                arguments = JsonDocument.Parse(json).RootElement;
            }
            catch (JsonException ex)
            {
                throw new CliUsageException($"the arguments are not valid JSON: {ex.Message}");
            }
        }

        using var host = await CliHost.StartAsync(cancellationToken).ConfigureAwait(false);
        var client = host.Services.GetRequiredService<IInvocationClient>();
        try
        {
            if (count > 0)
                return await SubmitManyAsync(client, task, arguments, timeout, count, cancellationToken).ConfigureAwait(false);

            var invocation = new RunInvocation { InvocationId = NewId.NextGuid(), TaskName = task, Arguments = arguments, Timeout = timeout };
            if (!wait)
            {
                await client.SubmitAsync(invocation, cancellationToken).ConfigureAwait(false);
                Console.WriteLine(invocation.InvocationId);
                return 0;
            }
            var seen = new System.Collections.Concurrent.ConcurrentBag<InvocationCompleted>();
            if (tree)
                client.CompletionObserved += seen.Add; // the sub-invocations' completions: every completion is received then
            var completed = await client.RunAsync(invocation, cancellationToken).ConfigureAwait(false);
            Console.WriteLine(JsonSerializer.Serialize(completed, CliJson.Options));
            if (tree)
                StatusCommand.PrintTree(completed, seen);
            return completed.Status == InvocationStatus.Succeeded ? 0 : 1;
        }
        finally
        {
            await host.StopAsync(CancellationToken.None).ConfigureAwait(false);
        }
    }

    static async Task<int> SubmitManyAsync(IInvocationClient client, string task, JsonElement? arguments, TimeSpan? timeout, int count, CancellationToken cancellationToken)
    {
        var latencies = new double[count];
        var succeeded = 0;
        var failed = 0;
        var total = Stopwatch.StartNew();
        var runs = new Task[count];
        for (var i = 0; i < count; i++)
        {
            var index = i;
            runs[i] = Task.Run(async () =>
            {
                var watch = Stopwatch.StartNew();
                var completed = await client.RunAsync(new RunInvocation
                {
                    InvocationId = NewId.NextGuid(),
                    TaskName = task,
                    Arguments = arguments,
                    Timeout = timeout,
                }, cancellationToken).ConfigureAwait(false);
                latencies[index] = watch.Elapsed.TotalMilliseconds;
                Interlocked.Increment(ref completed.Status == InvocationStatus.Succeeded ? ref succeeded : ref failed);
            }, cancellationToken);
        }

        var all = Task.WhenAll(runs);
        while (await Task.WhenAny(all, Task.Delay(200, cancellationToken)).ConfigureAwait(false) != all)
            DrawProgress(Volatile.Read(ref succeeded) + Volatile.Read(ref failed), count);
        await all.ConfigureAwait(false);
        DrawProgress(count, count);
        Console.Error.WriteLine();
        total.Stop();

        Array.Sort(latencies);
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"completed: {count}  succeeded: {succeeded}  failed: {failed}  elapsed: {total.Elapsed.TotalSeconds:F2} s  " +
            $"throughput: {count / total.Elapsed.TotalSeconds:F1}/s  latency p50: {Percentile(latencies, 0.50):F1} ms  p99: {Percentile(latencies, 0.99):F1} ms"));
        return failed == 0 ? 0 : 1;
    }

    static void DrawProgress(int done, int count)
    {
        const int width = 40;
        var filled = (int)((long)done * width / count);
        Console.Error.Write($"\r[{new string('#', filled)}{new string('.', width - filled)}] {done}/{count}");
    }

    static double Percentile(double[] sorted, double p) =>
        sorted.Length == 0 ? 0 : sorted[Math.Clamp((int)Math.Ceiling(p * sorted.Length) - 1, 0, sorted.Length - 1)];
}
