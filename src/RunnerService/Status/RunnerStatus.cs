using System.Text.Json.Serialization;

namespace RunnerService.Status;

public sealed record RunnerStatus
{
    public string Instance { get; init; } = "";
    public int Pid { get; init; }
    public int SlotsTotal { get; init; }
    public int SlotsBusy { get; init; }
    public int PeakSlotsBusy { get; init; }
    public int WorkersAlive { get; init; }
    public int PeakWorkersAlive { get; init; }
    public IReadOnlyList<WorkerStatus> Workers { get; init; } = [];

    /// <summary>What this replica runs with (the start log's <c>Settings:</c> line).</summary>
    public Hosting.EffectiveSettings? Settings { get; init; }
}

public sealed record WorkerStatus
{
    public int Pid { get; init; }
    public Guid InvocationId { get; init; }
    public string TaskName { get; init; } = "";
    public string State { get; init; } = "";
    public int Attempt { get; init; }
    public double AgeSeconds { get; init; }
    public IReadOnlyList<Guid> WaitingFor { get; init; } = [];
}

[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase)]
[JsonSerializable(typeof(RunnerStatus))]
[JsonSerializable(typeof(Contracts.InvocationStatusReport))]
partial class StatusJsonContext : JsonSerializerContext;
