namespace RunnerService.Contracts;

/// <summary>Request to the invocation saga: what do you know about this invocation? Answered with <see cref="InvocationStatusReport"/>.</summary>
public record GetInvocationStatus
{
    public Guid InvocationId { get; init; }
}
