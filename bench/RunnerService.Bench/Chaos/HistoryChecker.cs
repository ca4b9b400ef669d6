using System.Globalization;
using System.Text;
using RunnerService.Contracts;

namespace RunnerService.Bench.Chaos;

/// <summary>One broken invariant, with the ids and the evidence.</summary>
sealed record Violation(string Kind, string Text);

/// <summary>
/// Checks a chaos run's history: the events the run collected, the marker files and the saga table.
/// <list type="bullet">
/// <item>every root completes exactly once (one InvocationCompleted), as expected (Succeeded, the right result), and
/// the saga's final state agrees; no sub-invocation completes twice;</item>
/// <item>no two runs (attempts, or processes of one attempt) of one invocation overlap in time, from the marker files;</item>
/// <item>no invocation is open (saga state not final) at the deadline after the last fault (for what was submitted
/// before that fault ended), nor at the end;</item>
/// <item>no worker process is left alive (after a replica's SIGKILL or SIGTERM, after the last invocation, after the
/// final stop); no two processes of one invocation were alive at once (from /proc).</item>
/// </list>
/// </summary>
sealed class HistoryChecker(ChaosHistory history, IReadOnlyList<string> markerFiles)
{
    public List<Violation> Violations { get; } = [];
    public List<string> Summary { get; } = [];

    /// <summary>Roots submitted before the last fault ended with no completion yet, at the open deadline.</summary>
    public IReadOnlyCollection<Guid>? UncompletedAtDeadline { get; set; }

    void Add(string kind, string text) => Violations.Add(new Violation(kind, text));

    public void Check(SagaSnapshot final, SagaSnapshot? atDeadline, DateTimeOffset? lastFaultEnd)
    {
        CheckCompletions(final);
        CheckMarkers(final);
        CheckOpen(final, atDeadline, lastFaultEnd);
        foreach (var w in history.WorkersLeft)
            Add("worker-left", $"worker pid {w.Pid} (ppid {w.PPid}, state {w.State}) alive {w.When}");
        foreach (var c in history.Concurrent)
            Add("concurrent-processes", $"{c.TaskName} {c.Id}: pid {c.FirstPid} (attempt {c.FirstAttempt}, {c.FirstRunner}) and pid {c.SecondPid} " +
                $"(attempt {c.SecondAttempt}, {c.SecondRunner}, started {c.SecondStartedAt:HH:mm:ss.fff}): {c.How}");
        Summarize(final);
    }

    void CheckCompletions(SagaSnapshot final)
    {
        foreach (var root in history.Roots.Values)
        {
            var completions = history.Completed.TryGetValue(root.Id, out var list) ? list : [];
            final.Rows.TryGetValue(root.Id, out var saga);
            var sagaText = saga is null ? "no saga row" : $"saga {saga.State} attempt {saga.Attempt} owner {saga.Owner}";
            if (completions.Count == 0)
            {
                Add("root-not-completed", $"{root.TaskName} {root.Id} {root.Arguments}: no InvocationCompleted; started: {StartedText(root.Id)}; {sagaText}");
                continue;
            }
            if (completions.Count > 1)
            {
                Add("root-completed-more-than-once", $"{root.TaskName} {root.Id}: {completions.Count} InvocationCompleted: {CompletionsText(completions)}; {sagaText}");
                continue;
            }
            var c = completions[0];
            if (saga is null || !saga.IsFinal || saga.State != c.Status.ToString() || saga.FinalStatus != c.Status.ToString())
                Add("saga-disagrees", $"{root.TaskName} {root.Id}: completed {c.Status} (attempt {c.Attempt}) but {sagaText}, final status {saga?.FinalStatus ?? "-"}");
            if (c.Status != InvocationStatus.Succeeded || !root.ResultIsRight(c.Result))
                Add("wrong-outcome", $"{root.TaskName} {root.Id} {root.Arguments}: {c.Status} attempt {c.Attempt} result {c.Result?.GetRawText() ?? "-"} " +
                    $"error {c.Error?.Type}: {c.Error?.Message}");
        }
        foreach (var (id, completions) in history.Completed)
        {
            if (completions.Count > 1 && !history.Roots.ContainsKey(id))
                Add("child-completed-more-than-once", $"{completions[0].TaskName} {id} (parent {completions[0].ParentInvocationId}): {CompletionsText(completions)}");
        }
    }

    string StartedText(Guid id) => history.Started.TryGetValue(id, out var s) && s.Count > 0
        ? string.Join(", ", s.Select(x => $"attempt {x.Attempt} pid {x.ProcessId} on {x.RunnerInstance} at {x.StartedAt:HH:mm:ss.fff}"))
        : "never";

    static string CompletionsText(IEnumerable<InvocationCompleted> completions) =>
        string.Join("; ", completions.Select(x => $"{x.Status} attempt {x.Attempt} pid {x.ProcessId} on {x.RunnerInstance} at {x.CompletedAt:HH:mm:ss.fff}"));

    int _markerLines, _markerRuns, _markedInvocations, _markedRerun;

    void CheckMarkers(SagaSnapshot final)
    {
        var malformed = new List<string>();
        var runs = MarkerLog.Read(markerFiles, malformed, out _markerLines);
        foreach (var m in malformed)
            Add("marker-line-malformed", m);
        _markedInvocations = runs.Count;
        foreach (var (id, list) in runs)
        {
            _markerRuns += list.Count;
            if (list.Count > 1)
                _markedRerun++;
            for (var i = 0; i < list.Count; i++)
            {
                for (var j = i + 1; j < list.Count; j++)
                {
                    var (a, b) = (list[i], list[j]);
                    if (b.FirstMs > a.LastMs || a.FirstMs > b.LastMs)
                        continue;
                    var root = final.RootOf(id);
                    var overlap = Math.Min(a.LastMs, b.LastMs) - Math.Max(a.FirstMs, b.FirstMs);
                    Add("attempts-overlap", $"marker {id} (root {root}{(root == id ? "" : $" {RootTask(root)}")}): {a.Describe()} and {b.Describe()} overlap by {overlap} ms; " +
                        $"started events: {StartedText(id)}");
                }
            }
        }
    }

    string RootTask(Guid root) => history.Roots.TryGetValue(root, out var r) ? r.TaskName : "?";

    void CheckOpen(SagaSnapshot final, SagaSnapshot? atDeadline, DateTimeOffset? lastFaultEnd)
    {
        if (atDeadline is not null && lastFaultEnd is { } end)
        {
            foreach (var row in atDeadline.Rows.Values.Where(r => !r.IsFinal))
            {
                var root = atDeadline.RootOf(row.Id);
                if (history.Roots.TryGetValue(root, out var plan) && plan.SubmittedAt <= end)
                    Add("open-after-deadline", $"{row.TaskName} {row.Id} (root {plan.TaskName} {root}, submitted {plan.SubmittedAt:HH:mm:ss.fff}) is {row.State} " +
                        $"(attempt {row.Attempt}, owner {row.Owner}, last change {row.UpdatedAt:HH:mm:ss.fff}) at {atDeadline.TakenAt:HH:mm:ss}, " +
                        $"{(atDeadline.TakenAt - end).TotalSeconds:F0} s after the last fault ended");
            }
            foreach (var id in UncompletedAtDeadline ?? [])
            {
                var plan = history.Roots[id];
                Add("open-after-deadline", $"{plan.TaskName} {id} (submitted {plan.SubmittedAt:HH:mm:ss.fff}, before the last fault ended) had no completion at " +
                    $"{atDeadline.TakenAt:HH:mm:ss}; started: {StartedText(id)}");
            }
        }
        foreach (var row in final.Rows.Values.Where(r => !r.IsFinal))
        {
            var root = final.RootOf(row.Id);
            Add("open-at-end", $"{row.TaskName} {row.Id} (root {RootTask(root)} {root}) is {row.State} (attempt {row.Attempt}, owner {row.Owner}, " +
                $"last change {row.UpdatedAt:HH:mm:ss.fff}) at the end; recoveries: {string.Join(" | ", row.Recoveries)}");
        }
    }

    void Summarize(SagaSnapshot final)
    {
        var roots = history.Roots.Values.ToList();
        Summary.Add($"roots submitted: {roots.Count} ({string.Join(", ", roots.GroupBy(r => r.TaskName).OrderBy(g => g.Key).Select(g => $"{g.Key} {g.Count()}"))})");
        Summary.Add($"roots completed (first completion): {roots.Count(r => history.Completed.ContainsKey(r.Id))}");
        foreach (var g in roots.GroupBy(r => r.TaskName).OrderBy(g => g.Key))
        {
            var outcomes = g.Select(r => history.Completed.TryGetValue(r.Id, out var c) && c.Count > 0 ? Outcome(c[0]) : "not completed")
                .GroupBy(x => x).OrderBy(x => x.Key).Select(x => $"{x.Key} {x.Count()}");
            Summary.Add($"  {g.Key,-7} {string.Join(", ", outcomes)}");
        }
        var children = final.Rows.Values.Where(r => !history.Roots.ContainsKey(r.Id)).ToList();
        Summary.Add($"sub-invocations in the saga: {children.Count} ({string.Join(", ", children.GroupBy(r => (r.TaskName, r.State)).OrderBy(g => g.Key)
            .Select(g => $"{g.Key.TaskName} {g.Key.State} {g.Count()}"))})");
        Summary.Add($"saga rows: {final.Rows.Count}; final {final.Rows.Values.Count(r => r.IsFinal)}");
        Summary.Add($"events: InvocationStarted {history.StartedEvents}, InvocationCompleted {history.CompletedEvents} " +
            $"(broker redeliveries to the run's own queue, counted once: {history.Redelivered})");
        var maxAttempt = history.Started.Select(kv => (kv.Key, Max: kv.Value.Max(s => s.Attempt))).ToList();
        Summary.Add($"attempts: {maxAttempt.Count(x => x.Max > 1)} invocations started more than one attempt " +
            $"({string.Join(", ", maxAttempt.GroupBy(x => x.Max).OrderBy(g => g.Key).Select(g => $"max attempt {g.Key}: {g.Count()}"))}); " +
            $"{history.Started.Count(kv => kv.Value.Select(s => s.ProcessId).Distinct().Count() > 1)} started in more than one process");
        var notes = final.Rows.Values.SelectMany(r => r.Recoveries).ToList();
        Summary.Add($"saga recovery notes: {notes.Count(n => n.Contains(" rerouted by ", StringComparison.Ordinal))} reroutes, " +
            $"{notes.Count(n => n.Contains(" stale ", StringComparison.Ordinal))} stale events ignored, " +
            $"{notes.Count(n => n.Contains(" sent again", StringComparison.Ordinal))} resumes sent again");
        Summary.Add($"marker files: {_markerLines} lines, {_markedInvocations} marker invocations, {_markerRuns} runs (attempt, pid), {_markedRerun} with more than one run");
    }

    static string Outcome(InvocationCompleted c) => c.Error is null ? c.Status.ToString() : $"{c.Status}/{c.Error.Type}";

    public string Report()
    {
        var sb = new StringBuilder();
        foreach (var line in Summary)
            sb.AppendLine(line);
        sb.AppendLine(CultureInfo.InvariantCulture, $"violations: {Violations.Count} ({string.Join(", ", Violations.GroupBy(v => v.Kind).Select(g => $"{g.Key} {g.Count()}"))})");
        foreach (var v in Violations)
            sb.AppendLine(CultureInfo.InvariantCulture, $"  VIOLATION {v.Kind}: {v.Text}");
        return sb.ToString();
    }
}
