using System.Collections.Concurrent;
using Microsoft.Extensions.Options;
using RunnerService.Hosting;

namespace RunnerService.Recovery;

/// <summary>
/// When this replica last heard each replica's heartbeat, its own included, and from that which peers it takes for
/// gone. All on this replica's clock, by receipt time: the sender's timestamp plays no part, so clock skew does not.
/// </summary>
public sealed class RunnerRegistry(IOptions<RunnerOptions> options, TimeProvider time)
{
    readonly ConcurrentDictionary<string, DateTimeOffset> _lastSeen = new(StringComparer.Ordinal);
    readonly string _me = options.Value.EffectiveInstanceId;
    readonly Lock _hearing = new();
    DateTimeOffset _hearingSince = time.GetUtcNow();

    /// <summary>Records that a heartbeat of <paramref name="instance"/> arrived now (this replica's clock).</summary>
    public void Seen(string instance)
    {
        var now = time.GetUtcNow();
        if (instance == _me)
        {
            lock (_hearing)
            {
                // Its own heartbeat back after a gap: whatever this replica did not hear from its peers meanwhile (a
                // broker outage, its own partition, a stalled consumer) says nothing about them.
                if (!_lastSeen.TryGetValue(_me, out var previous) || now - previous > DeafAfter)
                    _hearingSince = now;
            }
        }
        _lastSeen.AddOrUpdate(instance, now, (_, previous) => now > previous ? now : previous);
    }

    /// <summary>Own heartbeats later than this: this replica does not hear the broker, so it judges nobody.</summary>
    TimeSpan DeafAfter => options.Value.HeartbeatInterval * 2;

    /// <summary>
    /// Whether <paramref name="instance"/> is presumed gone: silent for <see cref="RunnerOptions.StaleAfter"/> plus one
    /// heartbeat interval, counted only over time in which this replica heard its own heartbeats. A peer cut off fences
    /// itself (kills its own workers) before <see cref="RunnerOptions.StaleAfter"/> without broker contact, so by then
    /// it runs nothing (docs/faults.md, "Ownership"). A replica that does not hear itself takes nobody for gone; one
    /// that hears itself again after a gap (a broker outage) gives every peer the whole limit again from then on, so
    /// a peer whose connection comes back a little later than its own is not taken for gone.
    /// </summary>
    public bool IsGone(string instance)
    {
        var now = time.GetUtcNow();
        if (!_lastSeen.TryGetValue(_me, out var self) || now - self > DeafAfter)
            return false;
        DateTimeOffset hearingSince;
        lock (_hearing)
            hearingSince = _hearingSince;
        var since = _lastSeen.TryGetValue(instance, out var seen) && seen > hearingSince ? seen : hearingSince;
        return now - since > options.Value.StaleAfter + options.Value.HeartbeatInterval;
    }

    public IReadOnlyDictionary<string, DateTimeOffset> LastSeen => _lastSeen;
}
