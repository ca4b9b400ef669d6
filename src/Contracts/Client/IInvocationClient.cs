using System.Text.Json;

namespace RunnerService.Contracts.Client;

/// <summary>
/// Submits invocations to RunnerService and awaits their completion. Register with
/// <see cref="InvocationClientRegistration.AddInvocationClient"/> next to an existing MassTransit bus.
/// </summary>
public interface IInvocationClient
{
    /// <summary>Publishes the invocation and returns when the broker has it; does not wait for the result.</summary>
    Task SubmitAsync(RunInvocation invocation, CancellationToken cancellationToken = default);

    /// <summary>
    /// Publishes the invocation and waits for its <see cref="InvocationCompleted"/>, which the runner sends to this
    /// client's own queue (the invocation's <see cref="RunInvocation.ReplyTo"/> must be empty).
    /// </summary>
    Task<InvocationCompleted> RunAsync(RunInvocation invocation, CancellationToken cancellationToken = default);

    /// <summary>Runs <paramref name="taskName"/> with <paramref name="arguments"/> and waits for its completion.</summary>
    Task<InvocationCompleted> RunAsync(string taskName, JsonElement? arguments, CancellationToken cancellationToken = default);

    /// <summary>
    /// Waits for the completion of an invocation this client has not published itself. Call it before the
    /// invocation can complete (completions are events, not stored here); use the status query for older ones. The
    /// first call binds a queue of this client to the completion exchange: from then on it receives every completion
    /// in the cluster, and filters them by id.
    /// </summary>
    Task<InvocationCompleted> WaitForCompletionAsync(Guid invocationId, CancellationToken cancellationToken = default);

    /// <summary>
    /// Cancels an invocation and its subtree, whatever its state (<see cref="CancelInvocation"/>); the reply says what
    /// the cancel found. Each cancelled invocation then completes once, as <see cref="InvocationStatus.Cancelled"/>.
    /// </summary>
    Task<CancelInvocationReply> CancelAsync(Guid invocationId, string? reason = null, string? requestedBy = null, CancellationToken cancellationToken = default);

    /// <summary>Asks the invocation saga what it knows about an invocation (status, owner, waits, result, history).</summary>
    Task<InvocationStatusReport> GetStatusAsync(Guid invocationId, CancellationToken cancellationToken = default);

    /// <summary>
    /// Raised for every completion in the cluster, including sub-invocations and other publishers' work. Subscribing
    /// binds a queue of this client to the completion exchange on its next call, with all of that traffic.
    /// </summary>
    event Action<InvocationCompleted>? CompletionObserved;

    /// <summary>
    /// Raised for each progress event of the invocations this client runs with <c>RunAsync</c> (sent to its own queue,
    /// at most one per invocation per <c>Runner:ProgressInterval</c>).
    /// </summary>
    event Action<InvocationProgress>? ProgressObserved;
}
