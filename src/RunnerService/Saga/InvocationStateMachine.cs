using MassTransit;
using RunnerService.Contracts;
using RunnerService.Contracts.Protocol;
using RunnerService.Saga.Messages;

namespace RunnerService.Saga;

/// <summary>
/// One instance per invocation id. Records status, owner and history; matches waits with completions; resumes a
/// waiter on its owner's own queue when all it waits for is final; refuses a wait that closes a cycle.
/// The allowed transitions are <see cref="InvocationTransitions"/> (and the table in docs/waiting.md).
/// An invocation that never waits and ends within <c>Runner:TrackAfter</c> reaches the saga only with its completion
/// (<see cref="TrackInvocation"/> says when the saga hears of a running one).
/// </summary>
public sealed class InvocationStateMachine : MassTransitStateMachine<InvocationState>
{
    public State Expected { get; private set; } = null!;
    public State Submitted { get; private set; } = null!;
    public State Running { get; private set; } = null!;
    public State Waiting { get; private set; } = null!;
    public State Resuming { get; private set; } = null!;
    public State Succeeded { get; private set; } = null!;
    public State Failed { get; private set; } = null!;
    public State TimedOut { get; private set; } = null!;
    public State Cancelled { get; private set; } = null!;

    public Event<TrackInvocation> Tracked { get; private set; } = null!;
    public Event<InvocationWaitingFor> WaitStarted { get; private set; } = null!;
    public Event<InvocationResumed> Resumed { get; private set; } = null!;
    public Event<InvocationCompleted> Completed { get; private set; } = null!;
    public Event<RegisterWaiter> WaiterRegistered { get; private set; } = null!;
    public Event<UpstreamChanged> UpstreamGrew { get; private set; } = null!;
    public Event<DependencyFinished> DependencyDone { get; private set; } = null!;
    public Event<ClaimInvocation> ClaimRequested { get; private set; } = null!;
    public Event<RecoverInvocation> RecoveryRequested { get; private set; } = null!;
    public Event<ResendResume> ResendRequested { get; private set; } = null!;
    public Event<CancelInvocation> CancelRequested { get; private set; } = null!;
    public Event<InvocationProgress> ProgressReported { get; private set; } = null!;

    readonly TimeProvider _time;

    /// <summary>The saga's clock: every time it records (<c>UpdatedAt</c>, which recovery judges staleness by, the history, the notes).</summary>
    DateTimeOffset Now => _time.GetUtcNow();

    public InvocationStateMachine(TimeProvider? time = null)
    {
        _time = time ?? TimeProvider.System;
        InstanceState(x => x.CurrentState);

        Event(() => Tracked, e => e.CorrelateById(c => c.Message.InvocationId));
        Event(() => WaitStarted, e => e.CorrelateById(c => c.Message.InvocationId));
        Event(() => Completed, e => e.CorrelateById(c => c.Message.InvocationId));
        Event(() => WaiterRegistered, e => e.CorrelateById(c => c.Message.InvocationId));
        Event(() => Resumed, e =>
        {
            e.CorrelateById(c => c.Message.InvocationId);
            e.OnMissingInstance(m => m.Discard());
        });
        Event(() => UpstreamGrew, e =>
        {
            e.CorrelateById(c => c.Message.InvocationId);
            e.OnMissingInstance(m => m.Discard());
        });
        Event(() => DependencyDone, e =>
        {
            e.CorrelateById(c => c.Message.WaiterId);
            e.OnMissingInstance(m => m.Discard());
        });
        Event(() => ClaimRequested, e => e.CorrelateById(c => c.Message.InvocationId));
        Event(() => RecoveryRequested, e =>
        {
            e.CorrelateById(c => c.Message.InvocationId);
            e.OnMissingInstance(m => m.Discard());
        });

        Event(() => ResendRequested, e =>
        {
            e.CorrelateById(c => c.Message.InvocationId);
            e.OnMissingInstance(m => m.Discard());
        });

        Event(() => CancelRequested, e => e.CorrelateById(c => c.Message.InvocationId));
        // A short run is not in the saga yet: its progress is not kept (the completion follows within TrackAfter).
        Event(() => ProgressReported, e =>
        {
            e.CorrelateById(c => c.Message.InvocationId);
            e.OnMissingInstance(m => m.Discard());
        });

        // Late or duplicate events (a track after the completion, a completion after a cancel...) change nothing.
        OnUnhandledEvent(x => x.Ignore());

        BeforeEnterAny(binder => binder.Then(c => RecordTransition(c.Saga, c.Message.Name)));

        Initially(
            When(Tracked).Then(c => Apply(c.Saga, c.Message)).TransitionTo(Running),
            BeginWait(When(WaitStarted)),
            Finish(When(Completed)),
            When(WaiterRegistered).Then(Touch).ThenAsync(AddWaiterAsync).TransitionTo(Expected),
            When(ClaimRequested).Then(c => Apply(c.Saga, c.Message)).RespondAsync(c => Task.FromResult(Reply(c.Saga, true))).TransitionTo(Running),
            // A cancel before the invocation: kept, so the runner that takes its message completes it as Cancelled.
            When(CancelRequested, c => Applies(c.Saga, c.Message)).Then(Touch).Then(c => RecordCancel(c.Saga, c.Message)).ThenAsync(c => AnswerCancelAsync(c, "Pending")).TransitionTo(Expected));

        During([Running, Waiting, Resuming],
            When(ProgressReported, c => c.Message.Attempt >= c.Saga.Attempt
                    && (c.Saga.LastProgress is null || c.Saga.LastProgress.Attempt < c.Message.Attempt || c.Saga.LastProgress.ReportedAt <= c.Message.ReportedAt))
                .Then(c => c.Saga.LastProgress = c.Message));

        // Cancel: a replica that holds the invocation is told to kill it; otherwise the runner that takes its message
        // (which reads the saga first) completes it as Cancelled without running it.
        During([Expected, Submitted],
            When(CancelRequested, c => Applies(c.Saga, c.Message)).Then(c => RecordCancel(c.Saga, c.Message)).ThenAsync(c => AnswerCancelAsync(c, "Pending")));
        During([Running, Waiting, Resuming],
            When(CancelRequested, c => Applies(c.Saga, c.Message)).Then(c => RecordCancel(c.Saga, c.Message)).ThenAsync(CancelOwnedAsync).ThenAsync(c => AnswerCancelAsync(c, "Cancelling")));
        During([Succeeded, Failed, TimedOut, Cancelled],
            When(CancelRequested).ThenAsync(c => AnswerCancelAsync(c, "AlreadyFinished")));

        // A track that comes after the same attempt's wait (a late timer, a redelivery) must not wipe that wait.
        During([Waiting, Resuming],
            When(Tracked, c => c.Message.Attempt > c.Saga.Attempt).Then(c => Apply(c.Saga, c.Message)).ThenAsync(CancelIfAskedAsync).TransitionTo(Running),
            When(Tracked, c => c.Message.Attempt <= c.Saga.Attempt).Then(c =>
            {
                c.Saga.ProcessId = c.Saga.ProcessId == 0 ? c.Message.ProcessId : c.Saga.ProcessId;
                Keep(c.Saga, c.Message.Invocation);
            }));

        During([Expected, Submitted, Running],
            When(Tracked, c => IsCurrent(c.Saga, c.Message)).Then(c => Apply(c.Saga, c.Message)).ThenAsync(CancelIfAskedAsync).TransitionTo(Running));

        During([Expected, Submitted, Running, Waiting, Resuming],
            When(ClaimRequested)
                .IfElse(c => MayClaim(c.Saga, c.Message),
                    granted => granted.Then(c => Apply(c.Saga, c.Message)).RespondAsync(c => Task.FromResult(Reply(c.Saga, true))).ThenAsync(CancelIfAskedAsync).TransitionTo(Running),
                    refused => refused.RespondAsync(c => Task.FromResult(Reply(c.Saga, false)))),
            // The attempt is the fencing token: only the current attempt (or a newer one) may end the invocation.
            Finish(When(Completed, c => !IsStale(c.Saga, c.Message.Attempt))),
            When(Completed, c => IsStale(c.Saga, c.Message.Attempt))
                .Then(c => RecordStale(c.Saga, nameof(InvocationCompleted), c.Message.Attempt, c.Message.RunnerInstance)),
            When(WaiterRegistered).ThenAsync(AddWaiterAsync),
            When(UpstreamGrew).ThenAsync(MergeUpstreamAsync));

        During([Expected, Submitted, Running, Resuming],
            BeginWait(When(WaitStarted, c => !IsStale(c.Saga, c.Message.Attempt))));

        // A wait of an attempt that is no longer current: its worker is paused on a replica that lost the invocation
        // (presumed gone, then rerouted). Nothing here changes; that replica is told to kill the worker.
        During([Expected, Submitted, Running, Waiting, Resuming],
            When(WaitStarted, c => IsStale(c.Saga, c.Message.Attempt))
                .Then(c => RecordStale(c.Saga, nameof(InvocationWaitingFor), c.Message.Attempt, c.Message.RunnerInstance))
                .ThenAsync(AbandonStaleWaitAsync));

        // A resume that was lost on its way: the owner still holds the worker paused for this wait. Send it again.
        During(Resuming,
            When(ResendRequested, c => c.Message.Attempt == c.Saga.Attempt && c.Message.WaitSequence == c.Saga.WaitSequence)
                .Then(c => c.Saga.Recoveries.Add($"{Now:O} resume of wait {c.Message.WaitSequence} sent again"))
                .ThenAsync(SendResumeAsync));

        // The same wait again: a redelivery after the state was stored but its RegisterWaiter notices were lost with
        // the broker connection. Send them again (a dependency ignores a waiter it already knows).
        During(Waiting,
            When(WaitStarted, c => c.Message.Attempt == c.Saga.Attempt && c.Message.WaitSequence == c.Saga.WaitSequence)
                .ThenAsync(RegisterWithOpenDependenciesAsync));

        During([Running, Waiting, Resuming],
            When(RecoveryRequested)
                .If(c => c.Saga.OwnerInstance == c.Message.Owner && c.Saga.Attempt == c.Message.Attempt,
                    x => x.ThenAsync(RerouteAsync).TransitionTo(Submitted)));

        During([Waiting, Resuming],
            When(Resumed, c => c.Message.WaitSequence == 0 || c.Message.WaitSequence >= c.Saga.WaitSequence).Then(c =>
            {
                c.Saga.OwnerInstance = c.Message.RunnerInstance;
                c.Saga.ProcessId = c.Message.ProcessId;
            }).TransitionTo(Running));

        During(Waiting,
            When(DependencyDone)
                .Then(c => Collect(c.Saga, c.Message.Outcome))
                .If(c => c.Saga.AllCollected, x => x.ThenAsync(SendResumeAsync).TransitionTo(Resuming)));

        During([Succeeded, Failed, TimedOut, Cancelled],
            // A completion again (a redelivery after the state was stored but the notices were lost, or a re-run):
            // tell the waiters again; a waiter ignores an outcome it already has.
            When(Completed).ThenAsync(NotifyWaitersAsync),
            When(WaiterRegistered).ThenAsync(AnswerFinalAsync),
            When(ClaimRequested).RespondAsync(c => Task.FromResult(Reply(c.Saga, false))),
            // A worker that waits for an invocation already final (a second copy of it that ran elsewhere) can never
            // be resumed: its replica is told to kill it.
            When(WaitStarted)
                .Then(c => c.Saga.Recoveries.Add($"{Now:O} wait of attempt {c.Message.Attempt} from {c.Message.RunnerInstance} after the end: its worker is abandoned"))
                .ThenAsync(c => AbandonWaitAsync(c, $"the invocation is already {c.Saga.CurrentState}")));

    }

    /// <summary>A cancel passed down a tree reaches only that tree's sub-invocations.</summary>
    bool Applies(InvocationState saga, CancelInvocation cancel) =>
        cancel.OnlyIfChildOf is not { } parent || saga.ParentInvocationId is null || saga.ParentInvocationId == parent;

    void RecordCancel(InvocationState saga, CancelInvocation cancel)
    {
        if (saga.CancelMessage is not null)
            return;
        var by = string.IsNullOrWhiteSpace(cancel.RequestedBy) ? "a client" : cancel.RequestedBy;
        saga.CancelMessage = string.IsNullOrWhiteSpace(cancel.Reason) ? $"cancelled by {by}" : $"cancelled by {by}: {cancel.Reason}";
        saga.Recoveries.Add($"{Now:O} {saga.CancelMessage} (in {(string.IsNullOrEmpty(saga.CurrentState) ? "Initial" : saga.CurrentState)})");
    }

    /// <summary>Answers a cancel sent as a request (a cancel passed down a subtree has nobody to answer).</summary>
    async Task AnswerCancelAsync(BehaviorContext<InvocationState, CancelInvocation> context, string outcome)
    {
        if (context.ResponseAddress is null)
            return;
        await context.RespondAsync(new CancelInvocationReply
        {
            InvocationId = context.Saga.CorrelationId,
            Outcome = outcome,
            Status = string.IsNullOrEmpty(context.Saga.CurrentState) ? "Initial" : context.Saga.CurrentState,
        }).ConfigureAwait(false);
    }

    /// <summary>
    /// The owner kills the worker and cancels the children it started. What it waits for is cancelled here too, when it
    /// is its sub-invocation (its owner may be gone, and then only the saga can pass the cancel on).
    /// </summary>
    async Task CancelOwnedAsync(BehaviorContext<InvocationState> context)
    {
        await CancelIfAskedAsync(context).ConfigureAwait(false);
        foreach (var dependency in context.Saga.WaitingFor.Where(id => id != context.Saga.CorrelationId))
        {
            await context.Publish(new CancelInvocation
            {
                InvocationId = dependency,
                Reason = $"its parent {context.Saga.CorrelationId} was cancelled",
                RequestedBy = context.Saga.CorrelationId.ToString(),
                OnlyIfChildOf = context.Saga.CorrelationId,
            }).ConfigureAwait(false);
        }
    }

    /// <summary>Once a replica holds an invocation whose cancel was asked for, it is told to kill that attempt.</summary>
    async Task CancelIfAskedAsync(BehaviorContext<InvocationState> context)
    {
        var saga = context.Saga;
        if (saga.CancelMessage is null || saga.OwnerAddress is not { } owner)
            return;
        var endpoint = await context.GetSendEndpoint(owner).ConfigureAwait(false);
        await endpoint.Send(new CancelAttempt { InvocationId = saga.CorrelationId, Attempt = saga.Attempt, Message = saga.CancelMessage }).ConfigureAwait(false);
    }

    /// <summary>An event of an attempt older than the saga's current one.</summary>
    bool IsStale(InvocationState saga, int attempt) => attempt < saga.Attempt;

    void RecordStale(InvocationState saga, string what, int attempt, string? replica)
    {
        saga.Recoveries.Add($"{Now:O} stale {what} of attempt {attempt} from {replica ?? "?"} ignored (current attempt {saga.Attempt})");
        Telemetry.RunnerMetrics.StaleEvent(what);
    }

    Task AbandonStaleWaitAsync(BehaviorContext<InvocationState, InvocationWaitingFor> context) =>
        AbandonWaitAsync(context, $"attempt {context.Message.Attempt} is stale: the invocation is at attempt {context.Saga.Attempt}");

    /// <summary>Tells the replica that sent a wait nobody will answer to kill that worker (nothing is rerouted).</summary>
    async Task AbandonWaitAsync(BehaviorContext<InvocationState, InvocationWaitingFor> context, string reason)
    {
        if (context.Message.RunnerAddress is not { } address)
            return;
        var endpoint = await context.GetSendEndpoint(address).ConfigureAwait(false);
        await endpoint.Send(new AbandonAttempt
        {
            InvocationId = context.Message.InvocationId,
            Attempt = context.Message.Attempt,
            Reason = reason,
        }).ConfigureAwait(false);
    }

    EventActivityBinder<InvocationState, InvocationWaitingFor> BeginWait(EventActivityBinder<InvocationState, InvocationWaitingFor> binder) =>
        binder
            .ThenAsync(RegisterWaitsAsync)
            .ThenAsync(CancelIfAskedAsync)
            .TransitionTo(Waiting)
            .If(c => c.Saga.AllCollected, x => x.ThenAsync(SendResumeAsync).TransitionTo(Resuming));

    EventActivityBinder<InvocationState, InvocationCompleted> Finish(EventActivityBinder<InvocationState, InvocationCompleted> binder) =>
        binder
            .ThenAsync(CompleteAsync)
            .If(c => c.Message.Status == InvocationStatus.Succeeded, x => x.TransitionTo(Succeeded))
            .If(c => c.Message.Status == InvocationStatus.Failed, x => x.TransitionTo(Failed))
            .If(c => c.Message.Status == InvocationStatus.TimedOut, x => x.TransitionTo(TimedOut))
            .If(c => c.Message.Status == InvocationStatus.Cancelled, x => x.TransitionTo(Cancelled));

    void Touch<T>(BehaviorContext<InvocationState, T> context) where T : class
    {
        if (context.Saga.CreatedAt == default)
            context.Saga.CreatedAt = Now;
        context.Saga.UpdatedAt = Now;
    }

    void RecordTransition(InvocationState saga, string to)
    {
        if (to is "Initial" or "Final")
            return;
        if (saga.CreatedAt == default)
            saga.CreatedAt = Now;
        saga.UpdatedAt = Now;
        saga.History.Add(new StatusChange
        {
            From = string.IsNullOrEmpty(saga.CurrentState) ? "Initial" : saga.CurrentState,
            To = to,
            At = saga.UpdatedAt,
            Replica = saga.OwnerInstance,
            Attempt = saga.Attempt,
        });
    }

    /// <summary>Keeps what the publisher asked for: a recovery publishes it again.</summary>
    void Keep(InvocationState saga, RunInvocation? message)
    {
        if (message is null)
            return;
        saga.TaskName ??= message.TaskName;
        saga.ParentInvocationId ??= message.ParentInvocationId;
        saga.Arguments ??= message.Arguments;
        saga.Timeout ??= message.Timeout;
        saga.MaxAttempts ??= message.MaxAttempts;
        saga.ReplyTo ??= message.ReplyTo;
    }

    /// <summary>A claim wins for a newer attempt, or for the current one when nobody (or the claimer itself) owns it.</summary>
    bool MayClaim(InvocationState saga, ClaimInvocation claim) =>
        !(claim.AskedAgain && OwnMessageExists(saga, claim.Invocation)) &&
        (claim.Attempt > saga.Attempt ||
        (claim.Attempt == saga.Attempt &&
         (saga.OwnerInstance is null || saga.OwnerInstance == claim.Instance || saga.OwnerInstance == claim.TakeOverFrom)));

    /// <summary>
    /// Whether a child asked for again by a later attempt of its parent also has its own message, which will run it:
    /// when it was rerouted (<c>Submitted</c>: the saga published it), or when an earlier attempt of the parent waited
    /// for it (<c>Expected</c>: that attempt had published it first). A child first awaited by the asking attempt itself
    /// has no other message, and refusing it would leave the parent waiting for ever.
    /// </summary>
    bool OwnMessageExists(InvocationState saga, RunInvocation? asked) =>
        saga.CurrentState == nameof(Submitted) ||
        (saga.CurrentState == nameof(Expected) &&
         (asked?.ParentInvocationId is not { } parent ||
          (saga.FirstWaitAttempts.TryGetValue(parent, out var first) && first < asked.ParentAttempt)));

    void Apply(InvocationState saga, ClaimInvocation claim)
    {
        saga.OwnerInstance = claim.Instance;
        saga.OwnerAddress = claim.InstanceAddress;
        saga.Attempt = claim.Attempt;
        saga.WaitingFor = [];
        saga.Collected = [];
        Keep(saga, claim.Invocation);
    }

    ClaimInvocationReply Reply(InvocationState saga, bool granted) => new()
    {
        InvocationId = saga.CorrelationId,
        Granted = granted,
        Status = saga.CurrentState,
        Owner = saga.OwnerInstance,
        Attempt = saga.Attempt,
    };

    /// <summary>The owner is gone: publish the invocation again as the next attempt, owned by nobody until claimed.</summary>
    async Task RerouteAsync(BehaviorContext<InvocationState, RecoverInvocation> context)
    {
        var saga = context.Saga;
        await context.Publish(new RunInvocation
        {
            InvocationId = saga.CorrelationId,
            TaskName = saga.TaskName ?? "",
            Arguments = saga.Arguments,
            ParentInvocationId = saga.ParentInvocationId,
            Timeout = saga.Timeout,
            MaxAttempts = saga.MaxAttempts,
            ReplyTo = saga.ReplyTo,
            Attempt = saga.Attempt + 1,
            SubmittedAt = Now,
        }).ConfigureAwait(false);
        saga.Recoveries.Add($"{Now:O} attempt {saga.Attempt} of {context.Message.Owner} rerouted by {context.Message.RecoveredBy}");
        // The owner was presumed gone. If it is not (its heartbeats were late, not missing), it still holds the old
        // attempt's worker, paused or running, and nothing else would ever tell it: it kills that worker when this
        // reaches its own queue. A replica that is really gone finds nothing to kill when it comes back.
        if (saga.OwnerAddress is { } owner)
        {
            var endpoint = await context.GetSendEndpoint(owner).ConfigureAwait(false);
            await endpoint.Send(new AbandonAttempt
            {
                InvocationId = saga.CorrelationId,
                Attempt = saga.Attempt,
                Reason = $"attempt {saga.Attempt} was rerouted: {context.Message.RecoveredBy} presumed {context.Message.Owner} gone",
            }).ConfigureAwait(false);
        }
        // The rerouted attempt is the current one now: a late redelivery of the old attempt must not be granted a
        // claim (it would run next to the new attempt), and only the new attempt's claim or track takes ownership.
        saga.Attempt++;
        saga.OwnerInstance = null;
        saga.OwnerAddress = null;
        saga.ProcessId = 0;
        saga.WaitingFor = [];
        saga.Collected = [];
    }

    /// <summary>
    /// A track may come late (its publish retried while the attempt was retried or taken over by another replica):
    /// only a newer attempt, or the current one from its owner (or with no owner yet), is applied.
    /// </summary>
    bool IsCurrent(InvocationState saga, TrackInvocation track) =>
        track.Attempt > saga.Attempt ||
        (track.Attempt == saga.Attempt && (saga.OwnerInstance is null || saga.OwnerInstance == track.RunnerInstance));

    void Apply(InvocationState saga, TrackInvocation message)
    {
        saga.TaskName = message.Invocation.TaskName;
        saga.ParentInvocationId = message.Invocation.ParentInvocationId;
        Keep(saga, message.Invocation);
        saga.OwnerInstance = message.RunnerInstance;
        saga.OwnerAddress = message.RunnerAddress;
        saga.ProcessId = message.ProcessId;
        saga.Attempt = message.Attempt;
        saga.UpdatedAt = Now; // a new owner or attempt is news even when the state stays Running
        // A new attempt starts afresh: a wait of the dead attempt is void.
        saga.WaitingFor = [];
        saga.Collected = [];
    }

    async Task RegisterWaitsAsync(BehaviorContext<InvocationState, InvocationWaitingFor> context)
    {
        var saga = context.Saga;
        var message = context.Message;
        saga.OwnerInstance = message.RunnerInstance;
        saga.OwnerAddress = message.RunnerAddress;
        saga.ProcessId = message.ProcessId;
        saga.Attempt = message.Attempt;
        saga.WaitingFor = [.. message.WaitingFor.Distinct()];
        saga.Children.AddRange(saga.WaitingFor.Where(id => id != saga.CorrelationId && !saga.Children.Contains(id)));
        saga.WaitSequence = message.WaitSequence;
        saga.Collected = [];
        if (saga.WaitingFor.Contains(saga.CorrelationId))
            saga.Collected.Add(CycleOutcome(saga.CorrelationId, $"invocation {saga.CorrelationId} waits for itself, which can never finish"));
        await RegisterWithOpenDependenciesAsync(context).ConfigureAwait(false);
    }

    /// <summary>Tells every dependency not answered yet (itself excepted) that this invocation waits for it.</summary>
    async Task RegisterWithOpenDependenciesAsync(BehaviorContext<InvocationState> context)
    {
        var saga = context.Saga;
        var chain = saga.Upstream.Append(saga.CorrelationId).Distinct().ToArray();
        foreach (var dependency in saga.WaitingFor.Where(d => d != saga.CorrelationId && saga.Collected.All(c => c.InvocationId != d)))
            await context.Publish(new RegisterWaiter { InvocationId = dependency, WaiterId = saga.CorrelationId, WaiterAttempt = saga.Attempt, Chain = chain }).ConfigureAwait(false);
    }

    async Task AddWaiterAsync(BehaviorContext<InvocationState, RegisterWaiter> context)
    {
        var saga = context.Saga;
        var message = context.Message;
        if (message.Chain.Contains(saga.CorrelationId))
        {
            await context.Publish(new DependencyFinished
            {
                WaiterId = message.WaiterId,
                Outcome = CycleOutcome(saga.CorrelationId, CycleMessage(message.WaiterId, saga.CorrelationId, message.Chain)),
            }).ConfigureAwait(false);
            return;
        }
        if (!saga.Waiters.Contains(message.WaiterId))
            saga.Waiters.Add(message.WaiterId);
        if (!saga.FirstWaitAttempts.TryGetValue(message.WaiterId, out var first) || message.WaiterAttempt < first)
            saga.FirstWaitAttempts[message.WaiterId] = message.WaiterAttempt;
        await MergeAndForwardAsync(context, message.Chain).ConfigureAwait(false);
    }

    async Task MergeUpstreamAsync(BehaviorContext<InvocationState, UpstreamChanged> context)
    {
        var saga = context.Saga;
        var message = context.Message;
        if (message.Chain.Contains(saga.CorrelationId))
        {
            // This invocation already waits (through others) for From, and From waits for it: refuse From's wait.
            saga.Waiters.Remove(message.From);
            await context.Publish(new DependencyFinished
            {
                WaiterId = message.From,
                Outcome = CycleOutcome(saga.CorrelationId, CycleMessage(message.From, saga.CorrelationId, message.Chain)),
            }).ConfigureAwait(false);
            return;
        }
        await MergeAndForwardAsync(context, message.Chain).ConfigureAwait(false);
    }

    /// <summary>Adds to the upstream set; while waiting, passes the news down to what this invocation waits for.</summary>
    async Task MergeAndForwardAsync(BehaviorContext<InvocationState> context, IEnumerable<Guid> chain)
    {
        var saga = context.Saga;
        var grew = false;
        foreach (var id in chain)
        {
            if (!saga.Upstream.Contains(id))
            {
                saga.Upstream.Add(id);
                grew = true;
            }
        }
        saga.UpdatedAt = Now;
        if (!grew || saga.WaitingFor.Count == 0 || saga.FinalStatus is not null)
            return;
        var forward = saga.Upstream.Append(saga.CorrelationId).Distinct().ToArray();
        foreach (var dependency in saga.WaitingFor.Where(d => saga.Collected.All(c => c.InvocationId != d)))
            await context.Publish(new UpstreamChanged { InvocationId = dependency, From = saga.CorrelationId, Chain = forward }).ConfigureAwait(false);
    }

    void Collect(InvocationState saga, DependencyOutcome outcome)
    {
        saga.UpdatedAt = Now;
        if (saga.WaitingFor.Contains(outcome.InvocationId) && saga.Collected.All(c => c.InvocationId != outcome.InvocationId))
            saga.Collected.Add(outcome);
    }

    async Task SendResumeAsync<T>(BehaviorContext<InvocationState, T> context) where T : class
    {
        var saga = context.Saga;
        var endpoint = await context.GetSendEndpoint(saga.OwnerAddress!).ConfigureAwait(false);
        var ordered = saga.WaitingFor.Select(id => saga.Collected.First(c => c.InvocationId == id)).ToArray();
        await endpoint.Send(new ResumeInvocation { InvocationId = saga.CorrelationId, Attempt = saga.Attempt, WaitSequence = saga.WaitSequence, Results = ordered })
            .ConfigureAwait(false);
    }

    async Task CompleteAsync(BehaviorContext<InvocationState, InvocationCompleted> context)
    {
        var saga = context.Saga;
        var message = context.Message;
        Touch(context);
        saga.TaskName = message.TaskName;
        saga.ParentInvocationId ??= message.ParentInvocationId;
        saga.FinalStatus = message.Status;
        saga.Result = message.Result;
        saga.Error = message.Error;
        saga.Attempt = message.Attempt;
        if (!string.IsNullOrEmpty(message.RunnerInstance))
            saga.OwnerInstance = message.RunnerInstance;
        // A short invocation reaches the saga only with its completion, which names its worker: the status shows it.
        // A completion without a process (cancelled before it ran, could not spawn) keeps what was known.
        if (message.ProcessId > 0)
            saga.ProcessId = message.ProcessId;
        saga.WaitingFor = [];
        saga.Collected = [];
        await NotifyWaitersAsync(context).ConfigureAwait(false);
    }

    /// <summary>Sends the final outcome to every waiter; the list is kept, so a redelivered completion can send again.</summary>
    async Task NotifyWaitersAsync(BehaviorContext<InvocationState, InvocationCompleted> context)
    {
        var outcome = context.Saga.Outcome();
        foreach (var waiter in context.Saga.Waiters)
            await context.Publish(new DependencyFinished { WaiterId = waiter, Outcome = outcome }).ConfigureAwait(false);
    }

    /// <summary>
    /// A waiter that registers after the end gets the outcome at once, and is recorded like the others: retention keeps
    /// this record while that waiter is open (it may ask again, after a reroute).
    /// </summary>
    Task AnswerFinalAsync(BehaviorContext<InvocationState, RegisterWaiter> context)
    {
        var saga = context.Saga;
        var message = context.Message;
        if (!saga.Waiters.Contains(message.WaiterId))
            saga.Waiters.Add(message.WaiterId);
        if (!saga.FirstWaitAttempts.TryGetValue(message.WaiterId, out var first) || message.WaiterAttempt < first)
            saga.FirstWaitAttempts[message.WaiterId] = message.WaiterAttempt;
        saga.UpdatedAt = Now;
        return context.Publish(new DependencyFinished { WaiterId = message.WaiterId, Outcome = saga.Outcome() });
    }

    DependencyOutcome CycleOutcome(Guid dependency, string message) => new()
    {
        InvocationId = dependency,
        Status = InvocationStatus.Failed,
        Error = new InvocationError { Type = InvocationErrorTypes.WaitCycle, Message = message },
    };

    static string CycleMessage(Guid waiter, Guid dependency, IEnumerable<Guid> chain) =>
        $"wait cycle: {waiter} waits for {dependency}, which already waits (directly or through others) for {waiter}; " +
        $"invocations in the cycle: {string.Join(", ", chain.Append(dependency).Distinct())}";

    /// <summary>What <c>status</c> shows of an instance (answered by <see cref="InvocationStatusConsumer"/>, outside the saga).</summary>
    internal static InvocationStatusReport Report(InvocationState saga) => new()
    {
        InvocationId = saga.CorrelationId,
        Found = true,
        Status = saga.CurrentState,
        TaskName = saga.TaskName,
        ParentInvocationId = saga.ParentInvocationId,
        OwnerInstance = saga.OwnerInstance,
        ProcessId = saga.ProcessId,
        Attempt = saga.Attempt,
        WaitingFor = saga.WaitingFor,
        Waiters = saga.Waiters,
        Children = saga.Children,
        CancelRequested = saga.CancelMessage,
        Progress = saga.LastProgress,
        Result = saga.Result,
        Error = saga.Error,
        History = saga.History,
    };
}
