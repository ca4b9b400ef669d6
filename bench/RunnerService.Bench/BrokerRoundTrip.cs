using System.Collections.Concurrent;
using System.Diagnostics;
using MassTransit;

namespace RunnerService.Bench;

/// <summary>A tiny message the round-trip scenario publishes (as the client publishes <c>RunInvocation</c>).</summary>
public sealed record BenchPing(Guid Id);

/// <summary>The reply, sent to the ping's response address (as the runner sends <c>InvocationCompleted</c>).</summary>
public sealed record BenchPong(Guid Id);

/// <summary>
/// (rtt) the broker round trip a one-at-a-time invocation cannot avoid, measured in the same run as (b): on a fresh
/// virtual host of the bench broker, a MassTransit bus publishes a tiny <see cref="BenchPing"/> (publisher confirms
/// on, like the client) to a durable endpoint; its consumer responds with <see cref="BenchPong"/> to the ping's
/// response address, a temporary reply queue bound to nothing else (like <c>InvocationClient</c>'s). One at a time:
/// publish → pong consumed is one sample; publish → ping consumed (one way) is kept in the details. No service and no
/// worker: the two broker hops of (b)'s path (RunInvocation in, InvocationCompleted back) through the same
/// MassTransit pipelines, with the broker and the bench on the same 2 cores.
/// </summary>
sealed class BrokerRoundTrip(BenchOptions o, BrokerAdmin admin, Report report)
{
    readonly ConcurrentDictionary<Guid, TaskCompletionSource<long>> _pongs = new();
    readonly ConcurrentDictionary<Guid, long> _pinged = new();

    public async Task RunAsync()
    {
        var p50 = report.Add(new Figure { Id = "rtt.p50", Name = "(rtt) broker round trip p50: publish ping → pong consumed, one at a time", Unit = "ms" });
        var p99 = report.Add(new Figure { Id = "rtt.p99", Name = "(rtt) broker round trip p99", Unit = "ms" });
        var stamp = DateTime.UtcNow.ToString("HHmmssfff", System.Globalization.CultureInfo.InvariantCulture);
        var name = $"bench-rtt-{stamp}";
        var vhost = await admin.CreateVirtualHostAsync(name);
        try
        {
            var bus = Bus.Factory.CreateUsingRabbitMq(cfg =>
            {
                cfg.Host(vhost);
                cfg.ReceiveEndpoint("bench-rtt-ping", e =>
                {
                    e.PrefetchCount = o.Slots;
                    e.Handler<BenchPing>(async c =>
                    {
                        _pinged[c.Message.Id] = Stopwatch.GetTimestamp();
                        await c.RespondAsync(new BenchPong(c.Message.Id));
                    });
                });
            });
            using (var startCts = new CancellationTokenSource(TimeSpan.FromSeconds(60)))
                await bus.StartAsync(startCts.Token);
            try
            {
                var replies = bus.ConnectReceiveEndpoint(new TemporaryEndpointDefinition("bench-rtt-pong"), KebabCaseEndpointNameFormatter.Instance, e =>
                {
                    e.ConfigureConsumeTopology = false;
                    e.Handler<BenchPong>(c =>
                    {
                        var at = Stopwatch.GetTimestamp();
                        if (_pongs.TryGetValue(c.Message.Id, out var tcs))
                            tcs.TrySetResult(at);
                        return Task.CompletedTask;
                    });
                });
                await replies.Ready.WaitAsync(TimeSpan.FromSeconds(60));
                var replyAddress = replies.ReceiveEndpoint.InputAddress;

                await SamplesAsync(bus, replyAddress, 100); // warm-up: connections, channels, JIT of the pipelines
                for (var run = 0; run < o.Runs; run++)
                {
                    var samples = await SamplesAsync(bus, replyAddress, o.RoundTripN);
                    p50.Runs.Add(Stats.Percentile([.. samples.Select(s => s.RoundTripMs)], 50));
                    p99.Runs.Add(Stats.Percentile([.. samples.Select(s => s.RoundTripMs)], 99));
                    p50.Details[$"run{run + 1}_one_way_p50_ms"] = Math.Round(Stats.Median([.. samples.Select(s => s.OneWayMs)]), 3);
                    p50.Details[$"run{run + 1}_loadavg"] = ProcStats.LoadAverage();
                    Console.Error.WriteLine($"[bench {DateTime.Now:HH:mm:ss}] (rtt) run {run + 1}: p50 {p50.Runs[^1]:F3} ms, p99 {p99.Runs[^1]:F3} ms, one way p50 {p50.Details[$"run{run + 1}_one_way_p50_ms"]} ms");
                }
                p50.Details["n_per_run"] = o.RoundTripN;
            }
            finally
            {
                using var stopCts = new CancellationTokenSource(TimeSpan.FromSeconds(30));
                await bus.StopAsync(stopCts.Token);
            }
        }
        finally
        {
            await admin.DeleteVirtualHostAsync(name);
        }
    }

    sealed record Sample(double RoundTripMs, double OneWayMs);

    async Task<List<Sample>> SamplesAsync(IBus bus, Uri replyAddress, int n)
    {
        var samples = new List<Sample>(n);
        for (var i = 0; i < n; i++)
        {
            var id = NewId.NextGuid();
            var tcs = new TaskCompletionSource<long>(TaskCreationOptions.RunContinuationsAsynchronously);
            _pongs[id] = tcs;
            var start = Stopwatch.GetTimestamp();
            await bus.Publish(new BenchPing(id), c => c.ResponseAddress = replyAddress);
            var end = await tcs.Task.WaitAsync(TimeSpan.FromSeconds(30));
            _pongs.TryRemove(id, out _);
            _pinged.TryRemove(id, out var pinged);
            samples.Add(new Sample(Stopwatch.GetElapsedTime(start, end).TotalMilliseconds, Stopwatch.GetElapsedTime(start, pinged).TotalMilliseconds));
        }
        return samples;
    }
}
