using System.Text.Json;
using Npgsql;

namespace RunnerService.Bench.Chaos;

/// <summary>
/// Every saga row of the run's schema at one moment, read straight from PostgreSQL (table <c>invocation_sagas</c>,
/// src/RunnerService/Saga/Persistence/PostgresSagaStore.cs; the document is the camel-cased InvocationState).
/// </summary>
sealed class SagaSnapshot
{
    public static readonly HashSet<string> FinalStates = ["Succeeded", "Failed", "TimedOut", "Cancelled"];

    public sealed record Row(Guid Id, string State, string? Owner, string TaskName, Guid? Parent, string? FinalStatus, int Attempt,
        IReadOnlyList<string> Recoveries, DateTimeOffset UpdatedAt, IReadOnlyList<Guid> Waiters)
    {
        public bool IsFinal => FinalStates.Contains(State);
    }

    SagaSnapshot(DateTimeOffset takenAt, Dictionary<Guid, Row> rows)
    {
        TakenAt = takenAt;
        Rows = rows;
    }

    public DateTimeOffset TakenAt { get; }
    public IReadOnlyDictionary<Guid, Row> Rows { get; }

    public static async Task<SagaSnapshot> TakeAsync(string connectionString, string schema)
    {
        var takenAt = DateTimeOffset.UtcNow;
        await using var connection = new NpgsqlConnection(connectionString);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand($"SELECT id, state, owner, updated_at, data::text FROM \"{schema}\".invocation_sagas;", connection);
        await using var reader = await command.ExecuteReaderAsync();
        var rows = new Dictionary<Guid, Row>();
        while (await reader.ReadAsync())
        {
            using var doc = JsonDocument.Parse(reader.GetString(4));
            var d = doc.RootElement;
            string? Str(string name) => d.TryGetProperty(name, out var p) && p.ValueKind == JsonValueKind.String ? p.GetString() : null;
            var id = reader.GetGuid(0);
            rows[id] = new Row(
                id,
                reader.GetString(1),
                reader.IsDBNull(2) ? null : reader.GetString(2),
                Str("taskName") ?? "",
                Str("parentInvocationId") is { } parent ? Guid.Parse(parent) : null,
                Str("finalStatus"),
                d.TryGetProperty("attempt", out var a) && a.ValueKind == JsonValueKind.Number ? a.GetInt32() : 0,
                d.TryGetProperty("recoveries", out var r) && r.ValueKind == JsonValueKind.Array ? [.. r.EnumerateArray().Select(x => x.GetString() ?? "")] : [],
                reader.GetFieldValue<DateTimeOffset>(3),
                d.TryGetProperty("waiters", out var w) && w.ValueKind == JsonValueKind.Array ? [.. w.EnumerateArray().Select(x => x.GetGuid())] : []);
        }
        return new SagaSnapshot(takenAt, rows);
    }

    /// <summary>
    /// The root of a row: its parent chain followed up to a row without a parent (or one not in the table). A child
    /// the saga knows only as awaited (<c>Expected</c>) has no parent recorded; its first waiter stands in.
    /// </summary>
    public Guid RootOf(Guid id)
    {
        var current = id;
        for (var hops = 0; hops < 1000 && Rows.TryGetValue(current, out var row) && (row.Parent ?? row.Waiters.FirstOrDefault()) is { } up && up != Guid.Empty; hops++)
            current = up;
        return current;
    }

    public async Task WriteAsync(string path)
    {
        await using var writer = new StreamWriter(path);
        foreach (var row in Rows.Values)
            await writer.WriteLineAsync(JsonSerializer.Serialize(row));
    }

    public static async Task DropSchemaAsync(string connectionString, string schema)
    {
        await using var connection = new NpgsqlConnection(connectionString);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand($"DROP SCHEMA IF EXISTS \"{schema}\" CASCADE;", connection);
        await command.ExecuteNonQueryAsync();
    }
}
