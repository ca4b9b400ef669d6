using System.Text.Json;
using Microsoft.Data.Sqlite;
using Xunit.Abstractions;

namespace RunnerService.IntegrationTests.Infrastructure;

/// <summary>
/// Checks a saga store after a test: every recorded status history follows the transition table documented in
/// docs/waiting.md, histories are continuous, and no invocation under a finished root is left non-final.
/// </summary>
public static class SagaAudit
{
    static readonly HashSet<string> Finals = ["Succeeded", "Failed", "TimedOut", "Cancelled"];

    public static IReadOnlyDictionary<string, HashSet<string>> DocumentedTransitions()
    {
        var text = File.ReadAllText(Path.Combine(RepoPaths.Root, "docs", "waiting.md"));
        var start = text.IndexOf("<!-- transitions:start -->", StringComparison.Ordinal);
        var end = text.IndexOf("<!-- transitions:end -->", StringComparison.Ordinal);
        if (start < 0 || end < start)
            throw new InvalidDataException("docs/waiting.md has no transitions table between its markers");
        var table = new Dictionary<string, HashSet<string>>();
        foreach (var line in text[start..end].Split('\n').Select(l => l.Trim()).Where(l => l.StartsWith('|')))
        {
            var cells = line.Trim('|').Split('|').Select(c => c.Trim()).ToArray();
            if (cells.Length < 2 || cells[0] is "From" || cells[0].StartsWith('-'))
                continue;
            table[cells[0]] = [.. cells[1].Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)];
        }
        return table;
    }

    public static void Verify(string databasePath, ITestOutputHelper? output)
    {
        var table = DocumentedTransitions();
        var sagas = Load(databasePath);
        var problems = new List<string>();
        foreach (var saga in sagas.Values)
        {
            var previous = "Initial";
            foreach (var change in saga.History)
            {
                if (change.From != previous)
                    problems.Add($"{saga.Id} ({saga.Task}): history jumps from {previous} to a change recorded from {change.From}");
                if (!table.TryGetValue(change.From, out var allowed) || !allowed.Contains(change.To))
                    problems.Add($"{saga.Id} ({saga.Task}): {change.From} -> {change.To} is not in docs/waiting.md");
                previous = change.To;
            }
            if (saga.History.Count > 0 && previous != saga.State)
                problems.Add($"{saga.Id} ({saga.Task}): history ends in {previous} but the state is {saga.State}");

            var root = saga;
            var hops = 0;
            while (root.Parent is { } parent && sagas.TryGetValue(parent, out var up) && hops++ < 1000)
                root = up;
            if (Finals.Contains(root.State) && !Finals.Contains(saga.State))
                problems.Add($"{saga.Id} ({saga.Task}) is {saga.State} although its root {root.Id} ({root.Task}) is {root.State}");
        }
        output?.WriteLine($"saga audit: {sagas.Count} instance(s), {sagas.Values.Sum(s => s.History.Count)} transition(s), {problems.Count} problem(s)");
        if (problems.Count > 0)
            throw new InvalidOperationException("saga audit failed:\n" + string.Join('\n', problems.Take(50)));
    }

    public static IReadOnlyDictionary<Guid, AuditedSaga> Load(string databasePath)
    {
        var sagas = new Dictionary<Guid, AuditedSaga>();
        using var connection = new SqliteConnection($"Data Source={databasePath};Mode=ReadOnly;Pooling=False");
        connection.Open();
        using var command = connection.CreateCommand();
        command.CommandText = "SELECT data FROM invocation_sagas;";
        using var reader = command.ExecuteReader();
        while (reader.Read())
        {
            using var doc = JsonDocument.Parse(reader.GetString(0));
            var root = doc.RootElement;
            var id = root.GetProperty("correlationId").GetGuid();
            var parent = root.TryGetProperty("parentInvocationId", out var p) && p.ValueKind == JsonValueKind.String ? p.GetGuid() : (Guid?)null;
            var history = root.GetProperty("history").EnumerateArray()
                .Select(h => (From: h.GetProperty("from").GetString()!, To: h.GetProperty("to").GetString()!))
                .ToList();
            sagas[id] = new AuditedSaga(id, root.GetProperty("currentState").GetString()!,
                root.TryGetProperty("taskName", out var t) ? t.GetString() : null, parent, history);
        }
        return sagas;
    }
}

public sealed record AuditedSaga(Guid Id, string State, string? Task, Guid? Parent, IReadOnlyList<(string From, string To)> History);
