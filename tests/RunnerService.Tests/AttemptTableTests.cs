using RunnerService.Processes;
using Xunit;

namespace RunnerService.Tests;

/// <summary>The replica's one table of what it holds of each invocation: claims, live sessions and finished attempts.</summary>
public class AttemptTableTests
{
    readonly ManualClock _clock = new();
    readonly Guid _id = Guid.NewGuid();

    AttemptTable<string> NewTable() => new(_clock);

    [Fact]
    public void A_claim_excludes_every_other_delivery_of_the_invocation_until_it_is_released()
    {
        var table = NewTable();
        Assert.Equal(LocalClaim.Granted, table.TryClaim(_id, 1, out _, out _));

        Assert.Equal(LocalClaim.Held, table.TryClaim(_id, 1, out var held, out var session));
        Assert.Equal(1, held);
        Assert.Null(session);
        Assert.Equal(LocalClaim.Held, table.TryClaim(_id, 2, out held, out _));
        Assert.Equal(1, held);
        Assert.True(table.Knows(_id));

        table.Release(_id, 2); // not the attempt held: nothing changes
        Assert.Equal(1, table.HeldAttempt(_id));
        table.Release(_id, 1);
        Assert.Null(table.HeldAttempt(_id));
        Assert.False(table.Knows(_id));
        Assert.Equal(LocalClaim.Granted, table.TryClaim(_id, 2, out _, out _));
    }

    [Fact]
    public void A_live_session_is_not_released_by_its_delivery_and_ends_once()
    {
        var table = NewTable();
        table.TryClaim(_id, 1, out _, out _);
        table.Started(_id, 1, "worker-1");

        table.Release(_id, 1); // the delivery ends while the worker is paused: it stays held
        Assert.Equal(LocalClaim.Held, table.TryClaim(_id, 2, out var held, out var session));
        Assert.Equal((1, "worker-1"), (held, session));
        Assert.True(table.TryGetSession(_id, out var live));
        Assert.Equal("worker-1", live);
        Assert.Equal(["worker-1"], table.Sessions);

        Assert.False(table.Ended(_id, 1, "another worker", finished: true));
        Assert.True(table.Ended(_id, 1, "worker-1", finished: true));
        Assert.False(table.Ended(_id, 1, "worker-1", finished: true)); // a second end gives nothing back twice
        Assert.Empty(table.Sessions);
        Assert.Equal(0, table.LiveCount);
    }

    [Fact]
    public void A_finished_attempt_is_not_claimed_again_but_a_newer_attempt_is_and_the_memory_stays()
    {
        var table = NewTable();
        table.TryClaim(_id, 1, out _, out _);
        table.Started(_id, 1, "w");
        table.Ended(_id, 1, "w", finished: true);

        Assert.Equal(LocalClaim.FinishedHere, table.TryClaim(_id, 1, out _, out _));
        Assert.True(table.FinishedHere(_id, 1));
        Assert.False(table.FinishedHere(_id, 2));
        Assert.True(table.Knows(_id));

        Assert.Equal(LocalClaim.Granted, table.TryClaim(_id, 2, out _, out _));
        Assert.True(table.FinishedHere(_id, 1)); // the newer claim keeps what finished here
        table.Release(_id, 2);
        Assert.Equal(LocalClaim.FinishedHere, table.TryClaim(_id, 1, out _, out _));
    }

    [Fact]
    public void An_attempt_taken_away_unfinished_is_forgotten_so_its_redelivery_can_run_it()
    {
        var table = NewTable();
        table.TryClaim(_id, 1, out _, out _);
        table.Started(_id, 1, "w");

        Assert.True(table.Ended(_id, 1, "w", finished: false));

        Assert.False(table.Knows(_id));
        Assert.False(table.FinishedHere(_id, 1));
        Assert.Equal(LocalClaim.Granted, table.TryClaim(_id, 1, out _, out _));
    }

    [Fact]
    public void Finished_attempts_are_forgotten_after_the_memory_and_a_later_finish_is_kept()
    {
        var table = NewTable();
        var other = Guid.NewGuid();
        Finish(table, _id, 1);
        _clock.Now += TimeSpan.FromMinutes(3);
        Finish(table, other, 1);
        _clock.Now += TimeSpan.FromMinutes(2) + TimeSpan.FromSeconds(1);

        Assert.False(table.FinishedHere(_id, 1)); // past the memory, even before it is swept
        Assert.False(table.Knows(_id));
        Assert.True(table.FinishedHere(other, 1));

        table.TryClaim(_id, 2, out _, out _); // the first entry renewed by a later attempt...
        table.Started(_id, 2, "w2");
        table.Ended(_id, 2, "w2", finished: true);
        _clock.Now += TimeSpan.FromMinutes(4);
        Finish(table, Guid.NewGuid(), 1); // ...is not forgotten when its first finish is swept out
        Assert.True(table.FinishedHere(_id, 2));
        Assert.False(table.FinishedHere(other, 1));
        Assert.Equal(LocalClaim.Granted, table.TryClaim(other, 1, out _, out _));
    }

    [Fact]
    public async Task Concurrent_claims_of_one_attempt_grant_exactly_one()
    {
        var table = NewTable();
        using var start = new ManualResetEventSlim();
        var claims = Enumerable.Range(0, 8).Select(i => Task.Run(() =>
        {
            start.Wait();
            return table.TryClaim(_id, 1, out _, out _);
        })).ToArray();
        start.Set();

        var results = await Task.WhenAll(claims);

        Assert.Equal(1, results.Count(r => r == LocalClaim.Granted));
        Assert.Equal(7, results.Count(r => r == LocalClaim.Held));
    }

    static void Finish(AttemptTable<string> table, Guid id, int attempt)
    {
        var worker = $"w-{id}";
        table.TryClaim(id, attempt, out _, out _);
        table.Started(id, attempt, worker);
        Assert.True(table.Ended(id, attempt, worker, finished: true));
    }
}
