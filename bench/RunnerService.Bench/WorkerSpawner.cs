using System.Diagnostics;
using System.Text.Json;

namespace RunnerService.Bench;

/// <summary>Starts the worker executable directly (no service): spawn → first reply, spawn floor, idle memory.</summary>
static class WorkerSpawner
{
    /// <summary>A started worker that has said hello and waits on stdin for its invocation.</summary>
    public sealed class IdleWorker(Process process, TimeSpan firstReply) : IAsyncDisposable
    {
        public Process Process { get; } = process;
        public TimeSpan FirstReply { get; } = firstReply;

        /// <summary>Closes stdin (a worker with no invocation exits at once), drains stdout, waits for the exit.</summary>
        public async ValueTask DisposeAsync()
        {
            try
            {
                Process.StandardInput.Close();
                await Process.StandardOutput.ReadToEndAsync();
                using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(10));
                await Process.WaitForExitAsync(cts.Token);
            }
            catch (OperationCanceledException)
            {
                Process.Kill();
            }
            finally
            {
                Process.Dispose();
            }
        }
    }

    /// <summary>Starts the worker like the service does (stdin/stdout pipes) and times it until its first line.</summary>
    public static async Task<IdleWorker> StartAsync(string file, IReadOnlyList<string> args)
    {
        var start = new ProcessStartInfo(file)
        {
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            UseShellExecute = false,
        };
        foreach (var a in args)
            start.ArgumentList.Add(a);
        var clock = Stopwatch.StartNew();
        var process = Process.Start(start)!;
        var line = await process.StandardOutput.ReadLineAsync();
        var elapsed = clock.Elapsed;
        if (line is null || !line.Contains("\"hello\"", StringComparison.Ordinal))
            throw new InvalidOperationException($"{file} did not say hello (first line: '{line}')");
        return new IdleWorker(process, elapsed);
    }

    /// <summary>
    /// Spawn → first reply, sequentially, in milliseconds. With <paramref name="cycles"/>: also each whole cycle
    /// (spawn → hello → stdin closed → exit awaited), what one fresh process costs a one-at-a-time caller.
    /// </summary>
    public static async Task<List<double>> FirstReplyAsync(string file, IReadOnlyList<string> args, int count, List<double>? cycles = null)
    {
        var times = new List<double>(count);
        for (var i = 0; i < count; i++)
        {
            var clock = Stopwatch.StartNew();
            var worker = await StartAsync(file, args);
            await worker.DisposeAsync();
            times.Add(worker.FirstReply.TotalMilliseconds);
            cycles?.Add(clock.Elapsed.TotalMilliseconds);
        }
        return times;
    }

    /// <summary>Processes per second: <paramref name="parallel"/> loops start, greet and end workers until <paramref name="count"/> are done.</summary>
    public static async Task<double> FloorAsync(string file, IReadOnlyList<string> args, int count, int parallel)
    {
        var next = 0;
        var clock = Stopwatch.StartNew();
        await Task.WhenAll(Enumerable.Range(0, parallel).Select(_ => Task.Run(async () =>
        {
            while (Interlocked.Increment(ref next) <= count)
            {
                await using var worker = await StartAsync(file, args);
            }
        })));
        return count / clock.Elapsed.TotalSeconds;
    }

    /// <summary>The C helper (bench/tools/spawnfloor.c): posix_spawn from a C parent, the machine's own floor.</summary>
    public static async Task<JsonElement?> NativeFloorAsync(string tool, int count, int parallel, string file)
    {
        if (!File.Exists(tool))
            return null;
        var start = new ProcessStartInfo(tool) { RedirectStandardOutput = true, UseShellExecute = false };
        start.ArgumentList.Add(count.ToString(System.Globalization.CultureInfo.InvariantCulture));
        start.ArgumentList.Add(parallel.ToString(System.Globalization.CultureInfo.InvariantCulture));
        start.ArgumentList.Add(file);
        using var process = Process.Start(start)!;
        var output = await process.StandardOutput.ReadToEndAsync();
        await process.WaitForExitAsync();
        return process.ExitCode == 0 ? JsonDocument.Parse(output).RootElement.Clone() : null;
    }
}
