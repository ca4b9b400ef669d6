namespace RunnerService.Recovery;

/// <summary>
/// Replica → its own instance queue, with every heartbeat: proof that the queue which carries its resumes still
/// delivers to it (<see cref="BrokerContact.OwnQueueDeaf"/>).
/// </summary>
public record InstanceEcho
{
    public string Instance { get; init; } = "";
    public DateTimeOffset At { get; init; }
}
