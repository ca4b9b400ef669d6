namespace RunnerService.Contracts;

/// <summary>A structured error: what kind of failure, a message for people, optional details.</summary>
public record InvocationError
{
    /// <summary>Machine-readable kind, one of <see cref="InvocationErrorTypes"/> or a task's own error type.</summary>
    public string Type { get; init; } = "";
    public string Message { get; init; } = "";
    public string? Details { get; init; }

    public override string ToString() => $"{Type}: {Message}";
}
