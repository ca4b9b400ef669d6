using RunnerService.Hosting;

namespace RunnerService.Tests;

[Trait("Category", "Unit")]
public class RunnerOptionsValidatorTests
{
    // A relative worker command is not checked on disk, so these cases test only the timeouts.
    static RunnerOptions Options() => new() { WorkerCommand = "worker", InstanceId = "test" };

    [Fact]
    public void The_defaults_are_valid_and_max_timeout_defaults_to_7_days()
    {
        Assert.True(new RunnerOptionsValidator().Validate(null, Options()).Succeeded);
        Assert.Equal(TimeSpan.FromDays(7), Options().MaxTimeout);
    }

    [Theory]
    [InlineData("00:00:00")]
    [InlineData("50.00:00:00")]
    public void A_max_timeout_that_is_not_positive_or_beyond_49_days_fails_at_start(string maxTimeout)
    {
        var options = Options();
        options.MaxTimeout = TimeSpan.Parse(maxTimeout, System.Globalization.CultureInfo.InvariantCulture);
        options.DefaultTimeout = TimeSpan.FromMinutes(1);
        var result = new RunnerOptionsValidator().Validate(null, options);
        Assert.True(result.Failed);
        Assert.Contains("Runner:MaxTimeout", result.FailureMessage);
    }

    [Fact]
    public void A_default_timeout_above_max_timeout_fails_at_start()
    {
        var options = Options();
        options.MaxTimeout = TimeSpan.FromHours(1);
        options.DefaultTimeout = TimeSpan.FromHours(2);
        var result = new RunnerOptionsValidator().Validate(null, options);
        Assert.True(result.Failed);
        Assert.Contains("Runner:DefaultTimeout (02:00:00) must not exceed Runner:MaxTimeout (01:00:00)", result.FailureMessage);
    }
}
