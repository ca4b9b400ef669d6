using Microsoft.Extensions.Options;
using RunnerService.Hosting;
using RunnerService.Recovery;

namespace RunnerService.Tests;

[Trait("Category", "Unit")]
public sealed class BrokerContactTests
{
    [Fact]
    public void The_own_queue_is_deaf_only_when_heartbeats_go_out_nothing_comes_back_and_no_consume_is_in_progress()
    {
        var clock = new ManualClock();
        var contact = new BrokerContact(Options.Create(new RunnerOptions { StaleAfter = TimeSpan.FromSeconds(15) }), clock);

        clock.Now += TimeSpan.FromSeconds(20);
        Assert.False(contact.OwnQueueDeaf); // no heartbeat confirmed either: an outage, which the fence covers
        contact.Confirmed();
        Assert.True(contact.OwnQueueDeaf);

        // A resume waiting for a slot holds its consume; an echo may wait behind it.
        var busy = contact.OwnQueueConsume();
        Assert.False(contact.OwnQueueDeaf);
        clock.Now += TimeSpan.FromSeconds(30);
        contact.Confirmed();
        Assert.False(contact.OwnQueueDeaf);
        busy.Dispose();
        busy.Dispose();
        Assert.False(contact.OwnQueueDeaf); // its end counts as delivery

        clock.Now += TimeSpan.FromSeconds(16);
        contact.Confirmed();
        Assert.True(contact.OwnQueueDeaf);
        contact.EchoHeard();
        Assert.False(contact.OwnQueueDeaf);
    }

    [Fact]
    public void Publishing_is_stuck_only_when_the_bus_has_been_connected_for_a_while_with_nothing_confirmed()
    {
        var clock = new ManualClock();
        var contact = new BrokerContact(Options.Create(new RunnerOptions { StaleAfter = TimeSpan.FromSeconds(15) }), clock);
        contact.Confirmed();
        clock.Now += TimeSpan.FromSeconds(20);
        Assert.False(contact.PublishingStuck(null)); // silent while the bus is not connected: an outage, which the fence covers
        Assert.False(contact.PublishingStuck(TimeSpan.FromSeconds(3))); // just back: its first heartbeat has not had the time
        Assert.True(contact.PublishingStuck(TimeSpan.FromSeconds(8))); // connected for 8 s, nothing confirmed for 20 s
        contact.Confirmed();
        Assert.False(contact.PublishingStuck(TimeSpan.FromSeconds(60)));
    }

    [Fact]
    public void The_fence_cancels_what_runs_under_its_token_and_the_next_confirmed_heartbeat_gives_a_fresh_one()
    {
        var clock = new ManualClock();
        var contact = new BrokerContact(Options.Create(new RunnerOptions { StaleAfter = TimeSpan.FromSeconds(15) }), clock);
        var before = contact.FenceToken;
        contact.Confirmed();
        Assert.Equal(before, contact.FenceToken); // a heartbeat alone changes nothing

        clock.Now += TimeSpan.FromSeconds(12);
        Assert.True(contact.MustFence);
        contact.Fence();
        Assert.True(before.IsCancellationRequested);
        Assert.True(contact.FenceToken.IsCancellationRequested); // still fenced: no new attempt may start
        contact.Fence();

        contact.Confirmed();
        var after = contact.FenceToken;
        Assert.False(after.IsCancellationRequested);
        Assert.True(before.IsCancellationRequested);
        contact.Confirmed();
        Assert.Equal(after, contact.FenceToken);
    }
}
