using RunnerService.Contracts;

namespace RunnerService.Saga.Messages;

/// <summary>
/// Replica → saga (request/response): may <see cref="Instance"/> run <see cref="Attempt"/> of this invocation?
/// Asked before a redelivered or repeated attempt starts, so no invocation runs twice at the same time.
/// </summary>
public record ClaimInvocation
{
    public Guid InvocationId { get; init; }
    public int Attempt { get; init; }
    public string Instance { get; init; } = "";
    public Uri? InstanceAddress { get; init; }

    /// <summary>Set when the claimer found the current owner gone (no heartbeat): take over from that owner.</summary>
    public string? TakeOverFrom { get; init; }

    /// <summary>
    /// The delivery is a child asked for again by its parent's later attempt, not the child's own message. Refused
    /// while the saga knows the child only as rerouted (<c>Submitted</c>) or as awaited (<c>Expected</c>) by an
    /// earlier attempt of that parent: the child's own message exists then, and runs it.
    /// </summary>
    public bool AskedAgain { get; init; }

    /// <summary>What was asked for, kept by the saga so that it can reroute the attempt if the claimer dies.</summary>
    public RunInvocation? Invocation { get; init; }
}

/// <summary>The saga's answer to <see cref="ClaimInvocation"/>.</summary>
public record ClaimInvocationReply
{
    public Guid InvocationId { get; init; }
    public bool Granted { get; init; }
    public string Status { get; init; } = "";

    /// <summary>The replica that owns the invocation now, when the claim was refused.</summary>
    public string? Owner { get; init; }
    public int Attempt { get; init; }
}
