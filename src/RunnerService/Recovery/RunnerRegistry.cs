using System.Collections.Concurrent;
using Microsoft.Extensions.Options;
using RunnerService.Hosting;

namespace RunnerService.Recovery;

/// <summary>
/// When this replica last heard each replica's heartbeat. A replica is presumed gone when nothing was heard from it
/// for <see cref="RunnerOptions.StaleAfter"/> — counting from this replica's own start for replicas never heard of.
/// </summary>
public sealed class RunnerRegistry(IOptions<RunnerOptions> options, TimeProvider time)
{
    readonly ConcurrentDictionary<string, DateTimeOffset> _lastSeen = new(StringComparer.Ordinal);
    readonly DateTimeOffset _startedAt = time.GetUtcNow();

    /// <summary>Records that a heartbeat of <paramref name="instance"/> arrived now (this replica's clock).</summary>
    public void Seen(string instance)
    {
        var now = time.GetUtcNow();
        _lastSeen.AddOrUpdate(instance, now, (_, previous) => now > previous ? now : previous);
    }

    /// <summary>
    /// A replica is presumed gone only after <see cref="RunnerOptions.StaleAfter"/> plus one heartbeat interval of
    /// silence: it fences itself (kills its own workers) before <see cref="RunnerOptions.StaleAfter"/> without broker
    /// contact, so by then it runs nothing (docs/faults.md, "Ownership").
    /// </summary>
    public bool IsStale(string instance)
    {
        var now = time.GetUtcNow();
        var since = _lastSeen.TryGetValue(instance, out var seen) ? seen : _startedAt;
        return now - since > options.Value.StaleAfter + options.Value.HeartbeatInterval;
    }

    public IReadOnlyDictionary<string, DateTimeOffset> LastSeen => _lastSeen;
}
