namespace RunnerService.Slots;

/// <summary>One held slot. Releasing twice is harmless, so every path can release in a finally.</summary>
public sealed class SlotLease(SlotPool pool) : IDisposable
{
    int _released;

    public bool IsReleased => Volatile.Read(ref _released) != 0;

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _released, 1) == 0)
            pool.Release();
    }
}
