namespace RunnerService.Slots;

/// <summary>
/// Counts the process slots of this replica. A slot is held only while a worker process runs;
/// a paused worker has given its slot back. Waiters for <see cref="SlotPriority.Resume"/> are served first.
/// </summary>
public sealed class SlotPool
{
    readonly Lock _lock = new();
    readonly LinkedList<TaskCompletionSource<SlotLease>> _resumeWaiters = new();
    readonly LinkedList<TaskCompletionSource<SlotLease>> _normalWaiters = new();
    int _busy;

    public SlotPool(int total)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(total, 1);
        Total = total;
    }

    public int Total { get; }

    public int Busy
    {
        get { lock (_lock) return _busy; }
    }

    /// <summary>Most slots ever busy at once (for tests and the status endpoint).</summary>
    public int PeakBusy { get; private set; }

    public ValueTask<SlotLease> AcquireAsync(SlotPriority priority, CancellationToken cancellationToken = default)
    {
        TaskCompletionSource<SlotLease> waiter;
        LinkedListNode<TaskCompletionSource<SlotLease>> node;
        lock (_lock)
        {
            if (_busy < Total)
                return ValueTask.FromResult(TakeLocked());
            waiter = new TaskCompletionSource<SlotLease>(TaskCreationOptions.RunContinuationsAsynchronously);
            node = (priority == SlotPriority.Resume ? _resumeWaiters : _normalWaiters).AddLast(waiter);
        }
        if (cancellationToken.CanBeCanceled)
        {
            var registration = cancellationToken.Register(() =>
            {
                lock (_lock)
                {
                    if (node.List is null)
                        return; // already granted
                    node.List.Remove(node);
                }
                waiter.TrySetCanceled(cancellationToken);
            });
            _ = waiter.Task.ContinueWith(_ => registration.Dispose(), TaskScheduler.Default);
        }
        return new ValueTask<SlotLease>(waiter.Task);
    }

    internal void Release()
    {
        TaskCompletionSource<SlotLease>? next = null;
        lock (_lock)
        {
            var list = _resumeWaiters.Count > 0 ? _resumeWaiters : _normalWaiters.Count > 0 ? _normalWaiters : null;
            if (list is not null)
            {
                next = list.First!.Value;
                list.RemoveFirst();
            }
            else
            {
                _busy--;
            }
        }
        // The slot passes straight to the next waiter: _busy stays the same.
        next?.TrySetResult(new SlotLease(this));
    }

    SlotLease TakeLocked()
    {
        _busy++;
        if (_busy > PeakBusy)
            PeakBusy = _busy;
        return new SlotLease(this);
    }
}
