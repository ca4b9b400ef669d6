using System.Text.Json.Serialization;

namespace RunnerService.Contracts.Protocol;

[JsonSourceGenerationOptions(
    PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase,
    DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
    AllowOutOfOrderMetadataProperties = true,
    UseStringEnumConverter = true)]
[JsonSerializable(typeof(WorkerMessage))]
internal partial class WorkerProtocolJsonContext : JsonSerializerContext;
