using Microsoft.Extensions.Options;
using RunnerService.Hosting;
using RunnerService.Recovery;

namespace RunnerService.Tests;

/// <summary>When a replica takes a peer for gone: only on silence it could have heard (its own heartbeats came back).</summary>
[Trait("Category", "Unit")]
public sealed class RunnerRegistryTests
{
    // StaleAfter 10 s + one heartbeat interval of 2 s: a peer is gone after 12 s of silence this replica could hear.
    static (RunnerRegistry Registry, ManualClock Clock) Create()
    {
        var clock = new ManualClock();
        var options = new RunnerOptions { InstanceId = "me", StaleAfter = TimeSpan.FromSeconds(10), HeartbeatInterval = TimeSpan.FromSeconds(2) };
        return (new RunnerRegistry(Options.Create(options), clock), clock);
    }

    /// <summary>Both replicas beat every interval for <paramref name="seconds"/>.</summary>
    static void Beat(RunnerRegistry registry, ManualClock clock, int seconds, params string[] who)
    {
        for (var t = 0; t < seconds; t += 2)
        {
            clock.Now += TimeSpan.FromSeconds(2);
            foreach (var instance in who)
                registry.Seen(instance);
        }
    }

    [Fact]
    public void A_peer_silent_while_this_replica_hears_itself_is_gone_after_the_stale_limit_and_one_interval()
    {
        var (registry, clock) = Create();
        Beat(registry, clock, 10, "me", "peer");
        Beat(registry, clock, 12, "me");
        Assert.False(registry.IsGone("peer"));
        Beat(registry, clock, 2, "me");
        Assert.True(registry.IsGone("peer"));
    }

    [Fact]
    public void After_a_broker_outage_peers_get_the_whole_stale_limit_again_from_when_this_replica_hears_itself()
    {
        var (registry, clock) = Create();
        Beat(registry, clock, 10, "me", "peer");
        // The broker is down for 18 s: nobody's heartbeat arrives, this replica's own neither.
        clock.Now += TimeSpan.FromSeconds(18);
        Assert.False(registry.IsGone("peer")); // this replica does not hear itself: it judges nobody
        // Back: this replica's connection recovers first; the peer's takes longer.
        registry.Seen("me");
        Assert.False(registry.IsGone("peer")); // was true: 18 s of silence counted although this replica heard nothing either
        Beat(registry, clock, 10, "me");
        Assert.False(registry.IsGone("peer"));
        Beat(registry, clock, 4, "me");
        Assert.True(registry.IsGone("peer")); // 14 s of silence since this replica could hear it
    }

    [Fact]
    public void A_replica_whose_own_heartbeats_stop_arriving_judges_nobody()
    {
        var (registry, clock) = Create();
        Beat(registry, clock, 10, "me", "peer");
        Beat(registry, clock, 10, "me");
        // Its own heartbeats are late by more than two intervals (its heartbeat queue or consumer is gone, or it is
        // too loaded to consume them): what it does not hear from the peer says nothing.
        clock.Now += TimeSpan.FromSeconds(5);
        Assert.False(registry.IsGone("peer"));
    }

    [Fact]
    public void A_peer_never_heard_of_is_judged_from_when_this_replica_first_heard_itself()
    {
        var (registry, clock) = Create();
        Assert.False(registry.IsGone("other"));
        Beat(registry, clock, 12, "me"); // its first own heartbeat 2 s after its start
        Assert.False(registry.IsGone("other"));
        Beat(registry, clock, 4, "me");
        Assert.True(registry.IsGone("other"));
    }
}
