using System.Text.Json.Nodes;

namespace RunnerService.Worker;

/// <summary>A task: gets its context, returns its JSON result (null for none) or throws to fail.</summary>
public delegate ValueTask<JsonNode?> TaskHandler(TaskContext context);
