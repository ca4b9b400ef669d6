namespace RunnerService.Contracts;

/// <summary>The error types the runner itself reports (a task may report its own types too).</summary>
public static class InvocationErrorTypes
{
    /// <summary>The task threw or reported an error.</summary>
    public const string TaskError = "TaskError";

    /// <summary>No task of that name exists in the worker.</summary>
    public const string UnknownTask = "UnknownTask";

    /// <summary>The worker exited (non-zero or not) without writing a result.</summary>
    public const string WorkerExited = "WorkerExited";

    /// <summary>The worker was killed by a signal it did not ask for.</summary>
    public const string WorkerKilled = "WorkerKilled";

    /// <summary>The worker wrote something that is not the protocol (bad JSON, unknown type, over-long line).</summary>
    public const string ProtocolViolation = "ProtocolViolation";

    /// <summary>The result was larger than the configured limit.</summary>
    public const string ResultTooLarge = "ResultTooLarge";

    /// <summary>The invocation ran longer than its timeout and was killed.</summary>
    public const string TimedOut = "TimedOut";

    /// <summary>Cancelled on request (<c>CancelInvocation</c>); the message says who asked and why.</summary>
    public const string Cancelled = "Cancelled";

    /// <summary>The invocation message itself was invalid (missing task name, arguments too large...).</summary>
    public const string InvalidInvocation = "InvalidInvocation";

    /// <summary>The worker process could not be started.</summary>
    public const string SpawnFailed = "SpawnFailed";

    /// <summary>The runner itself failed while driving the worker (a bug or an environment problem).</summary>
    public const string RunnerError = "RunnerError";

    /// <summary>A wait was refused because it would close a cycle of invocations waiting for each other.</summary>
    public const string WaitCycle = "WaitCycle";

    /// <summary>A sub-invocation the task waited for did not succeed (the task did not catch it).</summary>
    public const string DependencyFailed = "DependencyFailed";

    /// <summary>The worker process of a paused invocation is gone (its replica restarted or died).</summary>
    public const string WorkerLost = "WorkerLost";
}
