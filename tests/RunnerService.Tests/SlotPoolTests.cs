using RunnerService.Slots;

namespace RunnerService.Tests;

[Trait("Category", "Unit")]
public class SlotPoolTests
{
    [Fact]
    public async Task Hands_out_at_most_the_total_and_passes_a_released_slot_to_a_waiter()
    {
        var pool = new SlotPool(2);
        var a = await pool.AcquireAsync(SlotPriority.Normal);
        var b = await pool.AcquireAsync(SlotPriority.Normal);
        var third = pool.AcquireAsync(SlotPriority.Normal).AsTask();
        Assert.False(third.IsCompleted);
        Assert.Equal(2, pool.Busy);

        a.Dispose();
        var c = await third.WaitAsync(TimeSpan.FromSeconds(5));
        Assert.Equal(2, pool.Busy);
        b.Dispose();
        c.Dispose();
        Assert.Equal(0, pool.Busy);
        Assert.Equal(2, pool.PeakBusy);
    }

    [Fact]
    public async Task Resumes_go_before_new_invocations()
    {
        var pool = new SlotPool(1);
        var held = await pool.AcquireAsync(SlotPriority.Normal);
        var normal = pool.AcquireAsync(SlotPriority.Normal).AsTask();
        var resume = pool.AcquireAsync(SlotPriority.Resume).AsTask();

        held.Dispose();
        var first = await resume.WaitAsync(TimeSpan.FromSeconds(5));
        Assert.False(normal.IsCompleted);
        first.Dispose();
        (await normal.WaitAsync(TimeSpan.FromSeconds(5))).Dispose();
        Assert.Equal(0, pool.Busy);
    }

    [Fact]
    public async Task Releasing_a_lease_twice_frees_one_slot_only()
    {
        var pool = new SlotPool(2);
        var a = await pool.AcquireAsync(SlotPriority.Normal);
        var b = await pool.AcquireAsync(SlotPriority.Normal);
        a.Dispose();
        a.Dispose();
        Assert.Equal(1, pool.Busy);
        b.Dispose();
        Assert.Equal(0, pool.Busy);
    }

    [Fact]
    public async Task A_cancelled_waiter_does_not_take_a_slot()
    {
        var pool = new SlotPool(1);
        var held = await pool.AcquireAsync(SlotPriority.Normal);
        using var cancel = new CancellationTokenSource();
        var waiting = pool.AcquireAsync(SlotPriority.Normal, cancel.Token).AsTask();
        cancel.Cancel();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => waiting);
        held.Dispose();
        Assert.Equal(0, pool.Busy);
        (await pool.AcquireAsync(SlotPriority.Normal)).Dispose();
    }

    [Fact]
    public async Task Concurrent_acquire_and_release_never_exceeds_the_total()
    {
        var pool = new SlotPool(3);
        var inside = 0;
        var maxInside = 0;
        await Task.WhenAll(Enumerable.Range(0, 200).Select(_ => Task.Run(async () =>
        {
            using var lease = await pool.AcquireAsync(SlotPriority.Normal);
            var now = Interlocked.Increment(ref inside);
            InterlockedMax(ref maxInside, now);
            await Task.Yield();
            Interlocked.Decrement(ref inside);
        })));
        Assert.True(maxInside <= 3, $"saw {maxInside} holders at once");
        Assert.Equal(0, pool.Busy);
        Assert.True(pool.PeakBusy <= 3);
    }

    static void InterlockedMax(ref int target, int value)
    {
        int current;
        while (value > (current = Volatile.Read(ref target)) && Interlocked.CompareExchange(ref target, value, current) != current)
        {
        }
    }
}
