namespace RunnerService.Invocations;

/// <summary>The message cannot be run as it is; it goes to the error queue with this reason, never retried.</summary>
public sealed class InvalidInvocationException(string reason) : Exception(reason);
