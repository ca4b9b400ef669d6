using System.Text.Json.Serialization;

namespace RunnerService.Contracts;

/// <summary>Final outcome of an invocation, carried by <c>InvocationCompleted</c>.</summary>
[JsonConverter(typeof(JsonStringEnumConverter<InvocationStatus>))]
public enum InvocationStatus
{
    Succeeded = 0,
    Failed = 1,
    TimedOut = 2,
    Cancelled = 3,
}
