using System.Text.Json.Serialization;

namespace RunnerService.Contracts.Protocol;

[JsonSourceGenerationOptions(
    PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase,
    DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
    AllowOutOfOrderMetadataProperties = true,
    UseStringEnumConverter = true)]
[JsonSerializable(typeof(WorkerMessage))]
// The concrete types, for the worker's reflection-light path (WorkerProtocol.WriteDirect / TryDecodeDirect).
[JsonSerializable(typeof(StartInvocationMessage))]
[JsonSerializable(typeof(ResumeMessage))]
[JsonSerializable(typeof(HelloMessage))]
[JsonSerializable(typeof(LogMessage))]
[JsonSerializable(typeof(ProgressMessage))]
[JsonSerializable(typeof(InvokeMessage))]
[JsonSerializable(typeof(WaitMessage))]
[JsonSerializable(typeof(ResultMessage))]
[JsonSerializable(typeof(ErrorMessage))]
internal partial class WorkerProtocolJsonContext : JsonSerializerContext;
