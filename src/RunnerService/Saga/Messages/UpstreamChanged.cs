namespace RunnerService.Saga.Messages;

/// <summary>
/// Saga → saga: more invocations now (transitively) wait for <see cref="From"/>, which waits for
/// <see cref="InvocationId"/>. Lets a cycle be found whichever of its waits is registered last.
/// </summary>
public record UpstreamChanged
{
    public Guid InvocationId { get; init; }
    public Guid From { get; init; }
    public IReadOnlyList<Guid> Chain { get; init; } = [];
}
