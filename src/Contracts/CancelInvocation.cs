namespace RunnerService.Contracts;

/// <summary>
/// Asks for an invocation to be cancelled, with its whole subtree. Handled by the invocation saga, whatever the
/// invocation's state: a queued one never runs, a running or paused one is killed (SIGTERM, SIGKILL after
/// <c>Runner:KillGrace</c>), a finished one is left as it is. Each cancelled invocation completes once, with status
/// <see cref="InvocationStatus.Cancelled"/>. A cancel that arrives before its invocation still wins. Sent as a
/// request, it is answered with <see cref="CancelInvocationReply"/>.
/// </summary>
public record CancelInvocation
{
    public Guid InvocationId { get; init; }

    /// <summary>Why; shown in the completion's error message.</summary>
    public string? Reason { get; init; }

    /// <summary>Who asked (a user, a service, or the parent whose cancel reached this sub-invocation).</summary>
    public string? RequestedBy { get; init; }

    /// <summary>
    /// Set when a cancel passes down a tree: it applies only if the invocation is a sub-invocation of this one (or
    /// not known yet), so an invocation that others wait for by id is not cancelled with one of its waiters.
    /// </summary>
    public Guid? OnlyIfChildOf { get; init; }
}

/// <summary>What a <see cref="CancelInvocation"/> request found.</summary>
public record CancelInvocationReply
{
    public Guid InvocationId { get; init; }

    /// <summary>
    /// <c>Cancelling</c>: it runs or waits on a replica, which is told to kill it. <c>Pending</c>: it has not run yet
    /// (queued, or not published yet); it is cancelled when it arrives. <c>AlreadyFinished</c>: nothing changes.
    /// </summary>
    public string Outcome { get; init; } = "";

    /// <summary>The saga's status of the invocation when the cancel arrived.</summary>
    public string Status { get; init; } = "";
}
