using RunnerService.Contracts.Protocol;
using RunnerService.Processes;

namespace RunnerService.Tests;

[Trait("Category", "Unit")]
public sealed class ProgressThrottleTests
{
    static readonly TimeSpan Interval = TimeSpan.FromSeconds(1);

    [Fact]
    public void The_first_report_goes_out_at_once_and_the_rest_of_the_interval_collapses_into_its_latest()
    {
        var throttle = new ProgressThrottle();
        var t0 = new DateTimeOffset(2026, 11, 29, 12, 0, 0, TimeSpan.Zero);
        var sent = new List<double>();
        TimeSpan? callBack = null;
        for (var i = 1; i <= 100; i++)
        {
            var (now, later) = throttle.Report(new ProgressMessage { Fraction = i / 100.0 }, t0 + TimeSpan.FromMilliseconds(9 * i), Interval);
            if (now is not null)
                sent.Add(now.Fraction);
            callBack ??= later;
        }
        Assert.Equal([0.01], sent);
        Assert.NotNull(callBack);
        Assert.InRange(callBack.Value, TimeSpan.FromMilliseconds(990), Interval);
        Assert.Equal(1.0, throttle.TakePending(t0 + Interval)!.Fraction);
        Assert.Null(throttle.TakePending(t0 + Interval));

        // The next report within an interval of that trailing one waits again; after it, it goes at once.
        Assert.Null(throttle.Report(new ProgressMessage { Fraction = 0.5 }, t0 + Interval + TimeSpan.FromMilliseconds(10), Interval).SendNow);
        Assert.Equal(0.5, throttle.TakePending(t0 + 2 * Interval)!.Fraction);
        Assert.NotNull(throttle.Report(new ProgressMessage { Fraction = 0.6 }, t0 + 4 * Interval, Interval).SendNow);
    }
}
