using System.Text.Json;
using RunnerService.Contracts;
using RunnerService.Hosting;
using RunnerService.Invocations;

namespace RunnerService.Tests;

[Trait("Category", "Unit")]
public class InvocationValidatorTests
{
    readonly RunnerOptions _options = new() { MaxArgumentsBytes = 64 };

    [Fact]
    public void A_complete_invocation_is_valid() =>
        Assert.Null(InvocationValidator.Validate(new RunInvocation { InvocationId = Guid.NewGuid(), TaskName = "echo" }, _options));

    [Fact]
    public void A_missing_task_name_is_named_as_the_reason() =>
        Assert.Contains("TaskName", InvocationValidator.Validate(new RunInvocation { InvocationId = Guid.NewGuid() }, _options));

    [Fact]
    public void Arguments_over_the_limit_name_the_limit()
    {
        var big = JsonDocument.Parse($"\"{new string('a', 100)}\"").RootElement;
        var reason = InvocationValidator.Validate(new RunInvocation { InvocationId = Guid.NewGuid(), TaskName = "echo", Arguments = big }, _options);
        Assert.Contains("Runner:MaxArgumentsBytes", reason);
    }

    [Fact]
    public void Slots_default_to_the_larger_of_the_minimum_and_the_cpu_count()
    {
        Assert.Equal(Math.Max(7, Environment.ProcessorCount), new RunnerOptions { MinSlots = 7 }.EffectiveSlots);
        Assert.Equal(1, new RunnerOptions { Slots = 1, MinSlots = 7 }.EffectiveSlots);
    }
}
