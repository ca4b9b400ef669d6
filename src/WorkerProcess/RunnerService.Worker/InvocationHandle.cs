namespace RunnerService.Worker;

/// <summary>A sub-invocation this task started; pass it to <see cref="TaskContext.WaitAll"/> to get its result.</summary>
public readonly record struct InvocationHandle(Guid InvocationId, string TaskName);
