namespace RunnerService.Contracts;

/// <summary>
/// A running task reported how far it is. Published at most once per <c>Runner:ProgressInterval</c> (1 s) per
/// invocation: the first report at once, then the latest of each interval; none after the invocation ends. Also sent
/// to the invocation's reply address when that is a MassTransit address (<c>IInvocationClient.RunAsync</c>). The saga
/// keeps the last one for <c>status</c>.
/// </summary>
public record InvocationProgress
{
    public Guid InvocationId { get; init; }
    public string? TaskName { get; init; }

    /// <summary>Between 0 and 1, as the task reported it.</summary>
    public double Fraction { get; init; }

    /// <summary>The task's own words, if any.</summary>
    public string? Message { get; init; }

    public int ProcessId { get; init; }
    public int Attempt { get; init; }
    public DateTimeOffset ReportedAt { get; init; }
}
