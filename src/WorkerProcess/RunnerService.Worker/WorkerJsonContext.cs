using System.Text.Json.Nodes;
using System.Text.Json.Serialization;

namespace RunnerService.Worker;

[JsonSerializable(typeof(JsonNode))]
[JsonSerializable(typeof(System.Text.Json.JsonElement))]
internal partial class WorkerJsonContext : JsonSerializerContext;
