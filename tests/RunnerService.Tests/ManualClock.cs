namespace RunnerService.Tests;

/// <summary>A clock the test moves by hand (<see cref="Now"/>), for the code that reads time through <see cref="TimeProvider"/>.</summary>
sealed class ManualClock : TimeProvider
{
    public DateTimeOffset Now { get; set; } = new(2026, 11, 29, 12, 0, 0, TimeSpan.Zero);

    public override DateTimeOffset GetUtcNow() => Now;
}
