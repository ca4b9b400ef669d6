using System.Collections.Concurrent;
using RunnerService.Invocations;

namespace RunnerService.Telemetry;

/// <summary>
/// The <c>task</c> label value of a metric: the task name for the first <c>limit</c> distinct valid names seen, then
/// <see cref="Other"/>. Task names come from messages and a label value is a series for the life of the process (a
/// histogram's is 21 buckets), so without a cap anyone who can publish could grow the service's memory and the
/// metrics backend without end. Spans and logs keep the real name.
/// </summary>
sealed class TaskLabels(int limit)
{
    /// <summary>The label of every task name past the limit, and of names that break the task-name rule.</summary>
    public const string Other = "other";

    readonly ConcurrentDictionary<string, byte> _known = new(StringComparer.Ordinal);
    readonly Lock _lock = new();

    public int Limit { get; } = limit;

    public string For(string taskName)
    {
        if (_known.ContainsKey(taskName))
            return taskName;
        // Rejected messages are counted too: an invalid name (any length, any characters) never becomes a label.
        if (!InvocationValidator.IsValidTaskName(taskName))
            return Other;
        lock (_lock)
        {
            // Checked again under the lock: another thread may have added this name while the cap filled.
            if (_known.ContainsKey(taskName))
                return taskName;
            if (_known.Count >= Limit)
                return Other;
            _known[taskName] = 0;
            return taskName;
        }
    }
}
