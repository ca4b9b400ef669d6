using RunnerService.Contracts;

namespace RunnerService.Saga.Messages;

/// <summary>
/// Replica → saga: this replica runs <see cref="Attempt"/> of the invocation (process, own queue), and here is what
/// the saga needs to run it again without this replica. Sent only when the saga must know: before the invocation
/// waits, when its delivery is handed off or lost while it runs on, and once it has run longer than
/// <c>Runner:TrackAfter</c>. An invocation that ends sooner costs the saga nothing but its completion.
/// </summary>
public record TrackInvocation
{
    public Guid InvocationId { get; init; }
    public RunInvocation Invocation { get; init; } = null!;
    public string RunnerInstance { get; init; } = "";
    public Uri? RunnerAddress { get; init; }
    public int ProcessId { get; init; }
    public int Attempt { get; init; }
    public DateTimeOffset StartedAt { get; init; }
}
