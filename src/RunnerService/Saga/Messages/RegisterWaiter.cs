namespace RunnerService.Saga.Messages;

/// <summary>Saga → saga: <see cref="WaiterId"/> waits for <see cref="InvocationId"/>; tell it when you are final.</summary>
public record RegisterWaiter
{
    public Guid InvocationId { get; init; }
    public Guid WaiterId { get; init; }

    /// <summary>The waiter's attempt that waits (0 when not known).</summary>
    public int WaiterAttempt { get; init; }

    /// <summary>The waiter and everything that (transitively) waits for it; if it holds the target, the wait closes a cycle.</summary>
    public IReadOnlyList<Guid> Chain { get; init; } = [];
}
