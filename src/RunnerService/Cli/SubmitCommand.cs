using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using MassTransit;
using Microsoft.Extensions.DependencyInjection;
using RunnerService.Contracts;
using RunnerService.Contracts.Client;

namespace RunnerService.Cli;

/// <summary><c>submit TASK [JSON] [--wait] [--tree] [--count N] [--json] [--timeout S] [--wait-timeout S]</c>.</summary>
static class SubmitCommand
{
    public static async Task<int> RunAsync(string[] args, CancellationToken cancellationToken)
    {
        string? task = null;
        string? json = null;
        var wait = false;
        var tree = false;
        var count = 0;
        var asJson = false;
        TimeSpan? timeout = null;
        TimeSpan? waitTimeout = null;
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
                    timeout = Seconds(args, ++i, "--timeout");
                    break;
                case "--wait-timeout":
                    waitTimeout = Seconds(args, ++i, "--wait-timeout");
                    break;
                case "--json":
                    asJson = true;
                    break;
                default:
                    // An option this verb does not know (a negative number is a JSON argument, not an option).
                    if (args[i].StartsWith('-') && !(args[i].Length > 1 && char.IsAsciiDigit(args[i][1])))
                        throw new CliUsageException($"unknown option {args[i]} for submit");
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
        if (asJson && count == 0)
            throw new CliUsageException("--json goes with --count (submit --wait already prints JSON)");
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
        // --wait-timeout limits this command's wait only; the invocation goes on.
        using var waiting = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        if (waitTimeout is { } limit)
            waiting.CancelAfter(limit);
        try
        {
            if (count > 0)
                return await SubmitManyAsync(client, task, arguments, timeout, count, asJson, waiting.Token, cancellationToken).ConfigureAwait(false);

            var invocation = new RunInvocation { InvocationId = NewId.NextGuid(), TaskName = task, Arguments = arguments, Timeout = timeout };
            if (!wait)
            {
                await client.SubmitAsync(invocation, cancellationToken).ConfigureAwait(false);
                Console.WriteLine(invocation.InvocationId);
                return 0;
            }
            var seen = new System.Collections.Concurrent.ConcurrentBag<InvocationCompleted>();
            // The sub-invocations' completions come from the completion exchange (every completion is received then),
            // the root's own reply from the client's queue: the tree is drawn once the exchange has shown the root too
            // (published after its children's).
            var rootSeen = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            if (tree)
            {
                client.CompletionObserved += c =>
                {
                    seen.Add(c);
                    if (c.InvocationId == invocation.InvocationId)
                        rootSeen.TrySetResult();
                };
            }
            // Progress as it arrives, on stderr (stdout stays the one JSON line of the completion).
            client.ProgressObserved += p =>
            {
                if (p.InvocationId == invocation.InvocationId)
                    Console.Error.WriteLine(string.Create(CultureInfo.InvariantCulture, $"progress {p.Fraction * 100:0}%{(p.Message is { Length: > 0 } m ? $": {m}" : "")}"));
            };
            InvocationCompleted completed;
            try
            {
                completed = await client.RunAsync(invocation, waiting.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested && waitTimeout is not null && waiting.IsCancellationRequested)
            {
                throw new CliFailure(CliApp.WaitTimedOut,
                    $"no completion of {invocation.InvocationId} within --wait-timeout {waitTimeout!.Value.TotalSeconds:0.###} s; it goes on (status {invocation.InvocationId})");
            }
            Console.WriteLine(JsonSerializer.Serialize(completed, CliJson.Options));
            if (tree)
            {
                await Task.WhenAny(rootSeen.Task, Task.Delay(TimeSpan.FromSeconds(10), cancellationToken)).ConfigureAwait(false);
                StatusCommand.PrintTree(completed, seen, Console.Error);
            }
            return completed.Status == InvocationStatus.Succeeded ? CliApp.Ok : CliApp.NotSucceeded;
        }
        finally
        {
            await host.StopAsync(CancellationToken.None).ConfigureAwait(false);
        }
    }

    static async Task<int> SubmitManyAsync(IInvocationClient client, string task, JsonElement? arguments, TimeSpan? timeout, int count, bool asJson,
        CancellationToken waiting, CancellationToken cancellationToken)
    {
        var latencies = new double[count];
        var queued = new double[count];
        var ran = new double[count];
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
                }, waiting).ConfigureAwait(false);
                latencies[index] = watch.Elapsed.TotalMilliseconds;
                // The runner's own split: waiting for a slot (and the broker), then the worker's run.
                queued[index] = completed.QueuedFor.TotalMilliseconds;
                ran[index] = completed.RunFor.TotalMilliseconds;
                Interlocked.Increment(ref completed.Status == InvocationStatus.Succeeded ? ref succeeded : ref failed);
            }, waiting);
        }

        // A bar on a terminal; elsewhere (a log, a pipe, CI) one summary line every 5 s.
        var terminal = !Console.IsErrorRedirected;
        var all = Task.WhenAll(runs);
        var lastLine = Stopwatch.StartNew();
        while (await Task.WhenAny(all, Task.Delay(200, CancellationToken.None)).ConfigureAwait(false) != all)
        {
            var done = Volatile.Read(ref succeeded) + Volatile.Read(ref failed);
            if (terminal)
                DrawProgress(done, count);
            else if (lastLine.Elapsed >= TimeSpan.FromSeconds(5))
            {
                Console.Error.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{done}/{count} completed after {total.Elapsed.TotalSeconds:F0} s"));
                lastLine.Restart();
            }
        }
        var timedOut = false;
        try
        {
            await all.ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested && waiting.IsCancellationRequested)
        {
            timedOut = true;
        }
        if (terminal)
        {
            DrawProgress(succeeded + failed, count);
            Console.Error.WriteLine();
        }
        total.Stop();

        var ended = Enumerable.Range(0, count).Where(i => latencies[i] > 0).ToArray();
        var finished = ended.Select(i => latencies[i]).Order().ToArray();
        var queuedSorted = ended.Select(i => queued[i]).Order().ToArray();
        var ranSorted = ended.Select(i => ran[i]).Order().ToArray();
        var summary = new CountSummary(count, succeeded + failed, succeeded, failed, Math.Round(total.Elapsed.TotalSeconds, 3),
            Math.Round(finished.Length / total.Elapsed.TotalSeconds, 1), Math.Round(Percentile(finished, 0.50), 1), Math.Round(Percentile(finished, 0.99), 1),
            Math.Round(Percentile(queuedSorted, 0.50), 1), Math.Round(Percentile(queuedSorted, 0.99), 1),
            Math.Round(Percentile(ranSorted, 0.50), 1), Math.Round(Percentile(ranSorted, 0.99), 1));
        Console.WriteLine(asJson
            ? JsonSerializer.Serialize(summary, CliJson.Options)
            : string.Create(CultureInfo.InvariantCulture,
                $"completed: {summary.Completed} of {count}  succeeded: {succeeded}  failed: {failed}  elapsed: {total.Elapsed.TotalSeconds:F2} s  " +
                $"throughput: {summary.PerSecond:F1}/s  latency p50: {summary.LatencyP50Ms:F1} ms  p99: {summary.LatencyP99Ms:F1} ms\n" +
                // All N are submitted at once: most of the latency is waiting for one of the replicas' slots.
                $"  of which queued (waiting for a slot)  p50: {summary.QueuedP50Ms:F1} ms  p99: {summary.QueuedP99Ms:F1} ms\n" +
                $"  and running (worker start to end)     p50: {summary.RunP50Ms:F1} ms  p99: {summary.RunP99Ms:F1} ms"));
        if (timedOut)
            throw new CliFailure(CliApp.WaitTimedOut, $"{count - summary.Completed} of {count} invocations did not complete within --wait-timeout; they go on");
        return failed == 0 ? CliApp.Ok : CliApp.NotSucceeded;
    }

    /// <summary>
    /// The summary of <c>submit --count</c>, also its <c>--json</c> form. Latency is submit to completion as the CLI
    /// saw it; Queued (submission until a replica started the worker) and Run (the worker's start to its end) come
    /// from each completion (<see cref="InvocationCompleted.QueuedFor"/>, <see cref="InvocationCompleted.RunFor"/>).
    /// Percentiles of each part separately: they do not add up to the latency's.
    /// </summary>
    sealed record CountSummary(int Submitted, int Completed, int Succeeded, int Failed, double ElapsedSeconds, double PerSecond, double LatencyP50Ms, double LatencyP99Ms,
        double QueuedP50Ms, double QueuedP99Ms, double RunP50Ms, double RunP99Ms);

    static void DrawProgress(int done, int count)
    {
        const int width = 40;
        var filled = (int)((long)done * width / count);
        Console.Error.Write($"\r[{new string('#', filled)}{new string('.', width - filled)}] {done}/{count}");
    }

    static TimeSpan Seconds(string[] args, int i, string option) =>
        i < args.Length && double.TryParse(args[i], CultureInfo.InvariantCulture, out var s) && s > 0
            ? TimeSpan.FromSeconds(s)
            : throw new CliUsageException($"{option} needs a positive number of seconds");

    static double Percentile(double[] sorted, double p) =>
        sorted.Length == 0 ? 0 : sorted[Math.Clamp((int)Math.Ceiling(p * sorted.Length) - 1, 0, sorted.Length - 1)];
}
