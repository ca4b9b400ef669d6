namespace RunnerService.Saga;

/// <summary>
/// The status transitions the saga may record; docs/waiting.md shows the same table, and a test checks every
/// recorded history against the documented one.
/// </summary>
public static class InvocationTransitions
{
    public static readonly IReadOnlySet<string> FinalStatuses = new HashSet<string> { "Succeeded", "Failed", "TimedOut", "Cancelled" };

    static readonly string[] Finals = ["Succeeded", "Failed", "TimedOut", "Cancelled"];

    public static readonly IReadOnlyDictionary<string, IReadOnlySet<string>> Allowed = new Dictionary<string, IReadOnlySet<string>>
    {
        ["Initial"] = Set(["Expected", "Running", "Waiting", .. Finals]),
        ["Expected"] = Set(["Running", "Waiting", .. Finals]),
        ["Submitted"] = Set(["Running", "Waiting", .. Finals]),
        ["Running"] = Set(["Waiting", "Submitted", .. Finals]),
        ["Waiting"] = Set(["Resuming", "Running", "Submitted", .. Finals]),
        ["Resuming"] = Set(["Running", "Waiting", "Submitted", .. Finals]),
        ["Succeeded"] = Set([]),
        ["Failed"] = Set([]),
        ["TimedOut"] = Set([]),
        ["Cancelled"] = Set([]),
    };

    public static bool IsAllowed(string from, string to) => Allowed.TryGetValue(from, out var targets) && targets.Contains(to);

    static HashSet<string> Set(string[] values) => [.. values];
}
