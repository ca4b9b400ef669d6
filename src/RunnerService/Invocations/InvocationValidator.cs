using RunnerService.Contracts;
using RunnerService.Hosting;

namespace RunnerService.Invocations;

static class InvocationValidator
{
    public const int MaxTaskNameLength = 200;

    /// <summary>Returns why the invocation cannot run, or null when it can.</summary>
    public static string? Validate(RunInvocation invocation, RunnerOptions options)
    {
        if (invocation.InvocationId == Guid.Empty)
            return "InvocationId is missing (an empty GUID)";
        if (string.IsNullOrWhiteSpace(invocation.TaskName))
            return "TaskName is missing";
        if (invocation.TaskName.Length > MaxTaskNameLength)
            return $"TaskName is longer than {MaxTaskNameLength} characters";
        if (invocation.Arguments is { } arguments)
        {
            var size = System.Text.Encoding.UTF8.GetByteCount(arguments.GetRawText());
            if (size > options.MaxArgumentsBytes)
                return $"Arguments are {size} bytes of JSON, over the limit of {options.MaxArgumentsBytes} (Runner:MaxArgumentsBytes)";
        }
        if (invocation.Timeout is { } timeout && timeout < TimeSpan.Zero)
            return "Timeout is negative";
        return null;
    }
}
