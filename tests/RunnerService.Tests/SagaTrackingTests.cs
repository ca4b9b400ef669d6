using MassTransit;
using MassTransit.Testing;
using Microsoft.Extensions.DependencyInjection;
using RunnerService.Contracts;
using RunnerService.Saga;
using RunnerService.Saga.Messages;

namespace RunnerService.Tests;

/// <summary>The saga's handling of <see cref="TrackInvocation"/>, on the in-memory test harness.</summary>
[Trait("Category", "Unit")]
public class SagaTrackingTests
{
    [Fact]
    public async Task A_late_track_of_an_older_attempt_or_from_a_former_owner_changes_nothing_and_a_newer_attempt_takes_over()
    {
        await using var provider = await StartHarnessAsync();
        var harness = provider.GetTestHarness();
        var saga = harness.GetSagaStateMachineHarness<InvocationStateMachine, InvocationState>();
        var id = NewId.NextGuid();

        await harness.Bus.Publish(Track(id, "replica-b", attempt: 2, pid: 20));
        Assert.NotNull(await saga.Exists(id, m => m.Running));
        var instance = saga.Sagas.Contains(id)!;
        Assert.Equal(("replica-b", 2, 20, "sleep"), (instance.OwnerInstance, instance.Attempt, instance.ProcessId, instance.TaskName));
        Assert.Equal(10, instance.Arguments!.Value.GetProperty("ms").GetInt32());

        // Attempt 1 was retried as attempt 2, then its track came late; and a replica that is not the owner of attempt 2.
        await harness.Bus.Publish(Track(id, "replica-a", attempt: 1, pid: 10));
        await harness.Bus.Publish(Track(id, "replica-c", attempt: 2, pid: 30));
        Assert.True(await harness.Consumed.Any<TrackInvocation>(m => m.Context.Message.RunnerInstance == "replica-a"));
        Assert.True(await harness.Consumed.Any<TrackInvocation>(m => m.Context.Message.RunnerInstance == "replica-c"));
        Assert.Equal(("replica-b", 2, 20), (instance.OwnerInstance, instance.Attempt, instance.ProcessId));

        await harness.Bus.Publish(Track(id, "replica-c", attempt: 3, pid: 33));
        Assert.True(await harness.Consumed.Any<TrackInvocation>(m => m.Context.Message.Attempt == 3));
        Assert.Equal(("replica-c", 3, 33), (instance.OwnerInstance, instance.Attempt, instance.ProcessId));
        Assert.Equal(["Running"], instance.History.Select(h => h.To).ToArray());
    }

    [Fact]
    public async Task The_saga_stamps_its_times_from_the_registered_clock_which_recovery_judges_staleness_by()
    {
        var clock = new ManualClock();
        await using var provider = await StartHarnessAsync(clock);
        var harness = provider.GetTestHarness();
        var saga = harness.GetSagaStateMachineHarness<InvocationStateMachine, InvocationState>();
        var id = NewId.NextGuid();

        await harness.Bus.Publish(Track(id, "replica-b", attempt: 1, pid: 20));
        Assert.NotNull(await saga.Exists(id, m => m.Running));
        var instance = saga.Sagas.Contains(id)!;
        Assert.Equal((clock.Now, clock.Now), (instance.CreatedAt, instance.UpdatedAt));
        Assert.Equal(clock.Now, instance.History.Single().At);

        var started = clock.Now;
        clock.Now += TimeSpan.FromMinutes(7);
        await harness.Bus.Publish(Track(id, "replica-c", attempt: 2, pid: 30));
        Assert.True(await harness.Consumed.Any<TrackInvocation>(m => m.Context.Message.Attempt == 2));
        Assert.True(await WaitForCountAsync(() => instance.Attempt, 2));
        Assert.Equal((started, clock.Now), (instance.CreatedAt, instance.UpdatedAt));
    }

    [Fact]
    public async Task After_a_recovery_reroute_only_the_new_attempt_may_claim_the_invocation()
    {
        await using var provider = await StartHarnessAsync();
        var harness = provider.GetTestHarness();
        var saga = harness.GetSagaStateMachineHarness<InvocationStateMachine, InvocationState>();
        var id = NewId.NextGuid();

        await harness.Bus.Publish(Track(id, "replica-a", attempt: 1, pid: 10));
        Assert.NotNull(await saga.Exists(id, m => m.Running));
        await harness.Bus.Publish(new RecoverInvocation { InvocationId = id, Owner = "replica-a", Attempt = 1, RecoveredBy = "replica-b" });
        Assert.NotNull(await saga.Exists(id, m => m.Submitted));
        var rerouted = await harness.Published.SelectAsync<RunInvocation>(m => m.Context.Message.InvocationId == id).FirstOrDefault();
        Assert.NotNull(rerouted);
        Assert.Equal(2, rerouted.Context.Message.Attempt);
        Assert.Equal("sleep", rerouted.Context.Message.TaskName);

        // The dead owner's delivery of attempt 1 comes back to another replica after the reroute: refused.
        var claims = harness.GetRequestClient<ClaimInvocation>();
        var old = await claims.GetResponse<ClaimInvocationReply>(new ClaimInvocation { InvocationId = id, Attempt = 1, Instance = "replica-b" });
        Assert.False(old.Message.Granted);
        var current = await claims.GetResponse<ClaimInvocationReply>(new ClaimInvocation { InvocationId = id, Attempt = 2, Instance = "replica-c" });
        Assert.True(current.Message.Granted);
        Assert.Equal(("replica-c", 2), (saga.Sagas.Contains(id)!.OwnerInstance, saga.Sagas.Contains(id)!.Attempt));
    }

    [Fact]
    public async Task A_reroute_tells_the_owner_presumed_gone_to_abandon_the_old_attempt_its_paused_worker_would_leak_otherwise()
    {
        await using var provider = await StartHarnessAsync();
        var harness = provider.GetTestHarness();
        var saga = harness.GetSagaStateMachineHarness<InvocationStateMachine, InvocationState>();
        var id = NewId.NextGuid();

        await harness.Bus.Publish(Track(id, "replica-a", attempt: 1, pid: 10));
        Assert.NotNull(await saga.Exists(id, m => m.Running));
        await harness.Bus.Publish(new RecoverInvocation { InvocationId = id, Owner = "replica-a", Attempt = 1, RecoveredBy = "replica-b" });
        Assert.NotNull(await saga.Exists(id, m => m.Submitted));
        var abandon = await harness.Sent.SelectAsync<AbandonAttempt>(m => m.Context.Message.InvocationId == id).FirstOrDefault();
        Assert.NotNull(abandon);
        Assert.Equal(1, abandon.Context.Message.Attempt);
        Assert.Equal("runner-instance-replica-a", abandon.Context.DestinationAddress!.AbsolutePath.Split('/').Last());
    }

    [Fact]
    public async Task After_a_reroute_the_old_attempts_completion_and_wait_are_stale_and_its_replica_is_told_to_abandon()
    {
        await using var provider = await StartHarnessAsync();
        var harness = provider.GetTestHarness();
        var saga = harness.GetSagaStateMachineHarness<InvocationStateMachine, InvocationState>();
        var id = NewId.NextGuid();

        await harness.Bus.Publish(Track(id, "replica-a", attempt: 1, pid: 10));
        Assert.NotNull(await saga.Exists(id, m => m.Running));
        await harness.Bus.Publish(new RecoverInvocation { InvocationId = id, Owner = "replica-a", Attempt = 1, RecoveredBy = "replica-b" });
        Assert.NotNull(await saga.Exists(id, m => m.Submitted));

        // Replica A was only cut off: its attempt 1 waits, then completes. Neither counts; A is told to abandon.
        await harness.Bus.Publish(new InvocationWaitingFor
        {
            InvocationId = id, WaitingFor = [NewId.NextGuid()], RunnerInstance = "replica-a",
            RunnerAddress = new Uri("queue:runner-instance-replica-a"), ProcessId = 10, Attempt = 1, WaitSequence = 1,
        });
        Assert.True(await harness.Sent.Any<AbandonAttempt>(m => m.Context.Message.InvocationId == id && m.Context.Message.Attempt == 1));
        await harness.Bus.Publish(new InvocationCompleted { InvocationId = id, TaskName = "sleep", Status = InvocationStatus.Succeeded, Attempt = 1, RunnerInstance = "replica-a" });
        Assert.True(await harness.Consumed.Any<InvocationCompleted>(m => m.Context.Message.InvocationId == id));
        var instance = saga.Sagas.Contains(id)!;
        Assert.Equal(nameof(InvocationStateMachine.Submitted), instance.CurrentState);
        Assert.Equal(2, instance.Attempt);
        Assert.Equal(2, instance.Recoveries.Count(r => r.Contains("stale", StringComparison.Ordinal)));

        // The current attempt completes the invocation.
        await harness.Bus.Publish(new InvocationCompleted { InvocationId = id, TaskName = "sleep", Status = InvocationStatus.Failed, Attempt = 2, RunnerInstance = "replica-b" });
        Assert.NotNull(await saga.Exists(id, m => m.Failed));
    }

    [Fact]
    public async Task A_wait_that_reaches_a_finished_invocation_gets_its_worker_abandoned_it_can_never_be_resumed()
    {
        // Seen in the chaos run: a second copy of a child ran on another replica and paused after the first copy had
        // finished the invocation; its worker stayed stopped until that replica shut down.
        await using var provider = await StartHarnessAsync();
        var harness = provider.GetTestHarness();
        var saga = harness.GetSagaStateMachineHarness<InvocationStateMachine, InvocationState>();
        var id = NewId.NextGuid();

        await harness.Bus.Publish(new InvocationCompleted { InvocationId = id, TaskName = "fanout", Status = InvocationStatus.Succeeded, Attempt = 1, RunnerInstance = "replica-a" });
        Assert.NotNull(await saga.Exists(id, m => m.Succeeded));
        await harness.Bus.Publish(new InvocationWaitingFor
        {
            InvocationId = id, WaitingFor = [NewId.NextGuid()], RunnerInstance = "replica-b",
            RunnerAddress = new Uri("queue:runner-instance-replica-b"), ProcessId = 20, Attempt = 1, WaitSequence = 1,
        });
        Assert.True(await harness.Sent.Any<AbandonAttempt>(m => m.Context.Message.InvocationId == id && m.Context.Message.Attempt == 1));
        Assert.Equal(nameof(InvocationStateMachine.Succeeded), saga.Sagas.Contains(id)!.CurrentState);
    }

    [Fact]
    public async Task A_waiter_that_registers_after_the_end_gets_the_outcome_and_is_recorded_so_retention_keeps_the_record()
    {
        // A quick child that the saga first hears of at its completion, before its parent's wait registers.
        await using var provider = await StartHarnessAsync();
        var harness = provider.GetTestHarness();
        var saga = harness.GetSagaStateMachineHarness<InvocationStateMachine, InvocationState>();
        var child = NewId.NextGuid();
        var parent = NewId.NextGuid();

        await harness.Bus.Publish(new InvocationCompleted { InvocationId = child, TaskName = "echo", Status = InvocationStatus.Succeeded, Attempt = 1, RunnerInstance = "replica-a" });
        Assert.NotNull(await saga.Exists(child, m => m.Succeeded));
        await harness.Bus.Publish(new RegisterWaiter { InvocationId = child, WaiterId = parent, WaiterAttempt = 1, Chain = [parent] });
        Assert.True(await harness.Published.Any<DependencyFinished>(m => m.Context.Message.WaiterId == parent));
        Assert.Contains(parent, saga.Sagas.Contains(child)!.Waiters);
    }

    [Fact]
    public async Task A_child_asked_for_again_is_left_to_its_own_message_while_awaited_and_refused_once_finished()
    {
        await using var provider = await StartHarnessAsync();
        var harness = provider.GetTestHarness();
        var saga = harness.GetSagaStateMachineHarness<InvocationStateMachine, InvocationState>();
        var claims = harness.GetRequestClient<ClaimInvocation>();
        var child = NewId.NextGuid();
        var parent = NewId.NextGuid();
        var askedByAttempt2 = new RunInvocation { InvocationId = child, TaskName = "echo", ParentInvocationId = parent, ParentAttempt = 2 };

        // The parent's first attempt waited for the child, so it had published the child's own message before.
        await harness.Bus.Publish(new RegisterWaiter { InvocationId = child, WaiterId = parent, WaiterAttempt = 1, Chain = [] });
        Assert.NotNull(await saga.Exists(child, m => m.Expected));
        var again = await claims.GetResponse<ClaimInvocationReply>(new ClaimInvocation { InvocationId = child, Attempt = 1, Instance = "replica-b", AskedAgain = true, Invocation = askedByAttempt2 });
        Assert.False(again.Message.Granted);
        var own = await claims.GetResponse<ClaimInvocationReply>(new ClaimInvocation { InvocationId = child, Attempt = 1, Instance = "replica-b" });
        Assert.True(own.Message.Granted);

        await harness.Bus.Publish(new InvocationCompleted { InvocationId = child, TaskName = "echo", Status = InvocationStatus.Succeeded, Attempt = 1, RunnerInstance = "replica-b" });
        Assert.NotNull(await saga.Exists(child, m => m.Succeeded));
        var late = await claims.GetResponse<ClaimInvocationReply>(new ClaimInvocation { InvocationId = child, Attempt = 1, Instance = "replica-c", AskedAgain = true, Invocation = askedByAttempt2 });
        Assert.False(late.Message.Granted);
    }

    [Fact]
    public async Task A_child_first_awaited_by_the_attempt_that_asks_for_it_again_is_granted_nobody_else_will_run_it()
    {
        // Seen in a broker restart: the parent's first attempt was killed before it invoked the child; its second
        // attempt invoked it and waited, and that wait's notice made the child Expected before its claim was read.
        await using var provider = await StartHarnessAsync();
        var harness = provider.GetTestHarness();
        var saga = harness.GetSagaStateMachineHarness<InvocationStateMachine, InvocationState>();
        var claims = harness.GetRequestClient<ClaimInvocation>();
        var child = NewId.NextGuid();
        var parent = NewId.NextGuid();

        await harness.Bus.Publish(new RegisterWaiter { InvocationId = child, WaiterId = parent, WaiterAttempt = 2, Chain = [] });
        Assert.NotNull(await saga.Exists(child, m => m.Expected));
        var asked = await claims.GetResponse<ClaimInvocationReply>(new ClaimInvocation
        {
            InvocationId = child, Attempt = 1, Instance = "replica-b", AskedAgain = true,
            Invocation = new RunInvocation { InvocationId = child, TaskName = "echo", ParentInvocationId = parent, ParentAttempt = 2 },
        });
        Assert.True(asked.Message.Granted);
        Assert.NotNull(await saga.Exists(child, m => m.Running));
    }

    [Fact]
    public async Task A_redelivered_wait_or_completion_sends_its_notices_again()
    {
        await using var provider = await StartHarnessAsync();
        var harness = provider.GetTestHarness();
        var saga = harness.GetSagaStateMachineHarness<InvocationStateMachine, InvocationState>();
        var waiter = NewId.NextGuid();
        var dependency = NewId.NextGuid();

        await harness.Bus.Publish(Track(waiter, "replica-a", attempt: 1, pid: 10));
        Assert.NotNull(await saga.Exists(waiter, m => m.Running));
        var wait = new InvocationWaitingFor
        {
            InvocationId = waiter, WaitingFor = [dependency], RunnerInstance = "replica-a", RunnerAddress = new Uri("queue:runner-instance-replica-a"),
            ProcessId = 10, Attempt = 1, WaitSequence = 1, PausedAt = DateTimeOffset.UtcNow,
        };
        await harness.Bus.Publish(wait);
        Assert.NotNull(await saga.Exists(waiter, m => m.Waiting));
        Assert.NotNull(await saga.Exists(dependency, m => m.Expected));
        // The same wait again, as after a lost connection: the dependency hears of its waiter again.
        await harness.Bus.Publish(wait);
        Assert.True(await WaitForCountAsync(() => harness.Published.Select<RegisterWaiter>(m => m.Context.Message.WaiterId == waiter).Count(), 2));

        var completed = new InvocationCompleted { InvocationId = dependency, TaskName = "echo", Status = InvocationStatus.Succeeded, Attempt = 1 };
        await harness.Bus.Publish(completed);
        Assert.NotNull(await saga.Exists(waiter, m => m.Resuming));
        await harness.Bus.Publish(completed);
        Assert.True(await WaitForCountAsync(() => harness.Published.Select<DependencyFinished>(m => m.Context.Message.WaiterId == waiter).Count(), 2));
        Assert.NotNull(await saga.Exists(waiter, m => m.Resuming));
    }

    /// <summary>The state machine alone on the in-memory test harness, started.</summary>
    static async Task<ServiceProvider> StartHarnessAsync(TimeProvider? clock = null)
    {
        var provider = new ServiceCollection()
            .AddSingleton(clock ?? TimeProvider.System)
            .AddMassTransitTestHarness(x => x.AddSagaStateMachine<InvocationStateMachine, InvocationState>().InMemoryRepository())
            .BuildServiceProvider(true);
        await provider.StartTestHarness();
        return provider;
    }

    static async Task<bool> WaitForCountAsync(Func<int> count, int expected)
    {
        for (var i = 0; i < 100 && count() < expected; i++)
            await Task.Delay(50);
        return count() >= expected;
    }

    static TrackInvocation Track(Guid id, string owner, int attempt, int pid) => new()
    {
        InvocationId = id,
        Invocation = new RunInvocation
        {
            InvocationId = id,
            TaskName = "sleep",
            Arguments = System.Text.Json.JsonDocument.Parse("""{"ms":10}""").RootElement.Clone(),
            Attempt = attempt,
        },
        RunnerInstance = owner,
        RunnerAddress = new Uri($"queue:runner-instance-{owner}"),
        ProcessId = pid,
        Attempt = attempt,
        StartedAt = DateTimeOffset.UtcNow,
    };
}
