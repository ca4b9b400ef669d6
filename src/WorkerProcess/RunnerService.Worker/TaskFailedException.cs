namespace RunnerService.Worker;

/// <summary>Throw from a task to fail it with a chosen error type, details, and whether a retry may help.</summary>
public class TaskFailedException(string message, string errorType = Contracts.InvocationErrorTypes.TaskError, string? details = null, bool retryable = false)
    : Exception(message)
{
    public string ErrorType { get; } = errorType;
    public string? Details { get; } = details;
    public bool Retryable { get; } = retryable;
}
