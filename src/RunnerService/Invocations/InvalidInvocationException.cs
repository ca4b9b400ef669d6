namespace RunnerService.Invocations;

/// <summary>
/// The message cannot be run as it is; it goes to the error queue with this reason, never retried
/// (<see cref="RejectInvalidInvocationFilter"/>). <paramref name="unreadable"/>: it did not even read as a RunInvocation.
/// </summary>
public sealed class InvalidInvocationException(string reason, bool unreadable = false) : Exception(reason)
{
    public bool Unreadable { get; } = unreadable;
}
