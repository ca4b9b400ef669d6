using RunnerService.Contracts.Protocol;

namespace RunnerService.Processes;

/// <summary>
/// At most one progress event per interval for one invocation: the first report goes out at once; later ones within
/// the interval replace each other, and the latest goes out when the interval is over (trailing edge).
/// </summary>
sealed class ProgressThrottle
{
    readonly Lock _lock = new();
    DateTimeOffset _lastSent = DateTimeOffset.MinValue;
    ProgressMessage? _pending;
    bool _scheduled;

    /// <summary>
    /// Takes a report. Returns it when it may go out now; otherwise keeps it, and returns the delay after which
    /// <see cref="TakePending"/> should be called (only for the first report kept in an interval).
    /// </summary>
    public (ProgressMessage? SendNow, TimeSpan? CallBackAfter) Report(ProgressMessage progress, DateTimeOffset now, TimeSpan interval)
    {
        lock (_lock)
        {
            if (!_scheduled && now - _lastSent >= interval)
            {
                _lastSent = now;
                return (progress, null);
            }
            _pending = progress;
            if (_scheduled)
                return (null, null);
            _scheduled = true;
            return (null, _lastSent + interval - now);
        }
    }

    /// <summary>The report kept for the end of the interval, if any; the interval starts again when one is taken.</summary>
    public ProgressMessage? TakePending(DateTimeOffset now)
    {
        lock (_lock)
        {
            _scheduled = false;
            var pending = _pending;
            _pending = null;
            if (pending is not null)
                _lastSent = now;
            return pending;
        }
    }
}
