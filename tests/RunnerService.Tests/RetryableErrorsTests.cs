using Microsoft.Extensions.Configuration;
using RunnerService.Hosting;

namespace RunnerService.Tests;

[Trait("Category", "Unit")]
public sealed class RetryableErrorsTests
{
    static RunnerOptions Bind(Dictionary<string, string?> settings)
    {
        var options = new RunnerOptions();
        new ConfigurationBuilder().AddInMemoryCollection(settings).Build().GetSection(RunnerOptions.SectionName).Bind(options);
        return options;
    }

    [Fact]
    public void Configured_retryable_errors_replace_the_defaults_instead_of_adding_to_them()
    {
        var options = Bind(new() { ["Runner:RetryableErrors:0"] = "TaskError" });
        Assert.Equal(["TaskError"], options.EffectiveRetryableErrors);
    }

    [Fact]
    public void Unset_they_are_the_defaults_and_one_empty_entry_means_none()
    {
        Assert.Equal(["WorkerExited", "WorkerKilled", "TimedOut"], Bind([]).EffectiveRetryableErrors);
        Assert.Empty(Bind(new() { ["Runner:RetryableErrors:0"] = "" }).EffectiveRetryableErrors);
    }
}
