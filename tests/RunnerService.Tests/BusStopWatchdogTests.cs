using RunnerService.Recovery;
using Xunit;

namespace RunnerService.Tests;

/// <summary>The limit on a bus restart's stop: a stop that never returns must not leave the replica deaf for good.</summary>
public class BusStopWatchdogTests
{
    [Fact]
    public async Task A_stop_that_never_returns_is_reported_after_the_limit()
    {
        var never = new TaskCompletionSource();

        Assert.False(await RecoveryService.FinishesWithinAsync(never.Task, TimeSpan.FromMilliseconds(50), TimeProvider.System, CancellationToken.None));
    }

    [Fact]
    public async Task A_stop_that_returns_in_time_passes_and_its_fault_is_thrown()
    {
        Assert.True(await RecoveryService.FinishesWithinAsync(Task.Delay(20), TimeSpan.FromSeconds(30), TimeProvider.System, CancellationToken.None));
        await Assert.ThrowsAsync<InvalidOperationException>(() =>
            RecoveryService.FinishesWithinAsync(Task.FromException(new InvalidOperationException("stop failed")), TimeSpan.FromSeconds(30), TimeProvider.System, CancellationToken.None));
    }

    [Fact]
    public async Task The_replica_stopping_ends_the_wait_at_once()
    {
        using var stopping = new CancellationTokenSource();
        var waiting = RecoveryService.FinishesWithinAsync(new TaskCompletionSource().Task, TimeSpan.FromMinutes(5), TimeProvider.System, stopping.Token);
        await stopping.CancelAsync();

        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => waiting);
    }
}
