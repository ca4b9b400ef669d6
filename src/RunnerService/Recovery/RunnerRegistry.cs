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

    public void Seen(string instance, DateTimeOffset at) =>
        _lastSeen.AddOrUpdate(instance, at, (_, previous) => at > previous ? at : previous);

    public bool IsStale(string instance)
    {
        var now = time.GetUtcNow();
        var since = _lastSeen.TryGetValue(instance, out var seen) ? seen : _startedAt;
        return now - since > options.Value.StaleAfter;
    }

    public IReadOnlyDictionary<string, DateTimeOffset> LastSeen => _lastSeen;
}
