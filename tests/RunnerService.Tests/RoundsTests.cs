using Microsoft.Extensions.Logging.Abstractions;
using RunnerService.Recovery;

namespace RunnerService.Tests;

[Trait("Category", "Unit")]
public sealed class RoundsTests
{
    [Fact]
    public async Task A_beat_whose_confirm_never_comes_does_not_silence_the_beats_after_it()
    {
        // RabbitMQ.Client 7.2 can lose the confirm of a publish in flight across a broker restart: that publish never
        // ends (until the stop cancels it), though the connection is back and new publishes go through.
        var beats = 0;
        var confirmed = 0;
        var lost = new TaskCompletionSource();
        var heartbeat = new Rounds("heartbeat", ct =>
        {
            if (Interlocked.Increment(ref beats) == 1)
                return lost.Task.WaitAsync(ct);
            Interlocked.Increment(ref confirmed);
            return Task.CompletedTask;
        }, TimeSpan.FromMilliseconds(100), TimeSpan.FromMilliseconds(50), maxUnfinished: 4, TimeProvider.System, NullLogger.Instance);

        using var stop = new CancellationTokenSource();
        var running = heartbeat.RunAsync(waitFirst: false, stop.Token);
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(10);
        while (Volatile.Read(ref confirmed) < 3 && DateTime.UtcNow < deadline)
            await Task.Delay(20);
        var confirmedBeforeStop = Volatile.Read(ref confirmed);
        stop.Cancel();
        await running.WaitAsync(TimeSpan.FromSeconds(10));

        Assert.True(confirmedBeforeStop >= 3, $"only {confirmedBeforeStop} beat(s) confirmed after the one whose confirm was lost");
    }

    [Fact]
    public async Task No_more_rounds_than_allowed_are_left_unfinished_at_once()
    {
        var started = 0;
        var rounds = new Rounds("heartbeat", ct =>
        {
            Interlocked.Increment(ref started);
            return Task.Delay(Timeout.Infinite, ct); // a broker that confirms nothing, ever
        }, TimeSpan.FromMilliseconds(50), TimeSpan.FromMilliseconds(20), maxUnfinished: 3, TimeProvider.System, NullLogger.Instance);

        using var stop = new CancellationTokenSource();
        var running = rounds.RunAsync(waitFirst: false, stop.Token);
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(20);
        while (Volatile.Read(ref started) < 3 && DateTime.UtcNow < deadline)
            await Task.Delay(20);
        await Task.Delay(500); // many intervals: no fourth round may start
        Assert.Equal(3, rounds.Unfinished);
        Assert.Equal(3, Volatile.Read(ref started));
        stop.Cancel();
        await running.WaitAsync(TimeSpan.FromSeconds(10));
    }

    [Fact]
    public async Task Beats_that_confirm_go_out_one_after_the_other_never_overlapping()
    {
        var inFlight = 0;
        var overlapped = false;
        var beats = 0;
        // A patience far above a beat's 10 ms: only a beat left unfinished could overlap the next one.
        var heartbeat = new Rounds("heartbeat", async ct =>
        {
            if (Interlocked.Increment(ref inFlight) > 1)
                overlapped = true;
            await Task.Delay(10, ct);
            Interlocked.Increment(ref beats);
            Interlocked.Decrement(ref inFlight);
        }, TimeSpan.FromMilliseconds(50), TimeSpan.FromSeconds(5), maxUnfinished: 4, TimeProvider.System, NullLogger.Instance);

        using var stop = new CancellationTokenSource();
        var running = heartbeat.RunAsync(waitFirst: false, stop.Token);
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(20);
        while (Volatile.Read(ref beats) < 5 && DateTime.UtcNow < deadline)
            await Task.Delay(20);
        stop.Cancel();
        await running.WaitAsync(TimeSpan.FromSeconds(10));

        Assert.True(Volatile.Read(ref beats) >= 5, $"only {beats} beat(s)");
        Assert.False(overlapped);
        Assert.Equal(0, heartbeat.Unfinished);
    }
}
