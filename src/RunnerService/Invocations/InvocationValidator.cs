using System.Text.Json;
using System.Text.RegularExpressions;
using RunnerService.Contracts;
using RunnerService.Hosting;

namespace RunnerService.Invocations;

/// <summary>
/// The one check of a <see cref="RunInvocation"/> as it arrives, whoever published it (a client, a worker's
/// sub-invocation, a retry, a reroute): every bound on message data is here, so a limit is enforced in one place.
/// </summary>
static partial class InvocationValidator
{
    public const int MaxTaskNameLength = 200;

    /// <summary>The task-name rule as people read it (docs/faults.md); <see cref="TaskNamePattern"/> is the same rule.</summary>
    public const string TaskNameRule = "letters, digits and _ - . : /, starting with a letter or digit, at most 200 characters";

    /// <summary>Returns why the invocation cannot run, or null when it can.</summary>
    public static string? Validate(RunInvocation invocation, RunnerOptions options)
    {
        if (invocation.InvocationId == Guid.Empty)
            return "InvocationId is missing (an empty GUID)";
        if (string.IsNullOrWhiteSpace(invocation.TaskName))
            return "TaskName is missing";
        if (invocation.TaskName.Length > MaxTaskNameLength)
            return $"TaskName is longer than {MaxTaskNameLength} characters";
        if (!IsValidTaskName(invocation.TaskName))
            return $"TaskName \"{JsonEncodedText.Encode(invocation.TaskName)}\" is not a valid task name ({TaskNameRule})";
        if (invocation.Arguments is { } arguments)
        {
            var size = System.Text.Encoding.UTF8.GetByteCount(arguments.GetRawText());
            if (size > options.MaxArgumentsBytes)
                return $"Arguments are {size} bytes of JSON, over the limit of {options.MaxArgumentsBytes} (Runner:MaxArgumentsBytes)";
        }
        if (invocation.Timeout is { } timeout)
        {
            if (timeout < TimeSpan.Zero)
                return "Timeout is negative";
            if (timeout > options.MaxTimeout)
                return $"Timeout {timeout} is over the limit of {options.MaxTimeout} (Runner:MaxTimeout)";
        }
        if (invocation.ReplyTo is { } replyTo && ReplySender.Problem(replyTo) is { } replyProblem)
            return replyProblem;
        if (invocation.MaxAttempts is { } maxAttempts)
        {
            if (maxAttempts < 1)
                return $"MaxAttempts is {maxAttempts}; it must be at least 1";
            if (maxAttempts > RunnerOptions.MaxAttemptsLimit)
                return $"MaxAttempts {maxAttempts} is over the limit of {RunnerOptions.MaxAttemptsLimit}";
        }
        return null;
    }

    /// <summary>Whether <paramref name="taskName"/> follows the task-name rule (metric labels use it too).</summary>
    public static bool IsValidTaskName(string taskName) => TaskNamePattern().IsMatch(taskName);

    // \z, not $: $ would let a trailing newline through.
    [GeneratedRegex(@"\A[A-Za-z0-9][A-Za-z0-9_.:/-]{0,199}\z", RegexOptions.CultureInvariant)]
    private static partial Regex TaskNamePattern();
}
