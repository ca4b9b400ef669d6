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

    [Theory]
    [InlineData("echo")]
    [InlineData("wait_for")]
    [InlineData("fib")]
    [InlineData("word-count")]
    [InlineData("images.resize")]
    [InlineData("billing:v2/invoice")]
    [InlineData("7zip")]
    public void Built_in_and_namespaced_task_names_are_valid(string taskName) =>
        Assert.Null(InvocationValidator.Validate(Invocation(taskName), _options));

    [Theory]
    [InlineData("_private")]
    [InlineData("-flag")]
    [InlineData("/bin/sh")]
    [InlineData("has space")]
    [InlineData("semi;colon")]
    [InlineData("new\nline")]
    [InlineData("echo\n")]
    [InlineData("caf\u00e9")]
    public void Task_names_outside_the_pattern_are_rejected_with_the_rule(string taskName)
    {
        taskName = System.Text.RegularExpressions.Regex.Unescape(taskName);
        var reason = InvocationValidator.Validate(Invocation(taskName), _options);
        Assert.NotNull(reason);
        Assert.Contains("is not a valid task name", reason);
        Assert.Contains(InvocationValidator.TaskNameRule, reason);
    }

    [Fact]
    public void A_task_name_of_200_characters_is_valid_and_one_of_201_is_not()
    {
        Assert.Null(InvocationValidator.Validate(Invocation(new string('a', 200)), _options));
        Assert.Contains("longer than 200", InvocationValidator.Validate(Invocation(new string('a', 201)), _options));
        Assert.False(InvocationValidator.IsValidTaskName(new string('a', 201)));
    }

    [Theory]
    [InlineData(1)]
    [InlineData(100)]
    public void Max_attempts_from_1_to_100_are_valid(int maxAttempts) =>
        Assert.Null(InvocationValidator.Validate(Invocation("echo") with { MaxAttempts = maxAttempts }, _options));

    [Theory]
    [InlineData(0, "at least 1")]
    [InlineData(-3, "at least 1")]
    [InlineData(101, "over the limit of 100")]
    [InlineData(1000, "MaxAttempts 1000 is over the limit of 100")]
    public void Max_attempts_outside_1_to_100_are_rejected(int maxAttempts, string expected) =>
        Assert.Contains(expected, InvocationValidator.Validate(Invocation("echo") with { MaxAttempts = maxAttempts }, _options));

    [Fact]
    public void A_timeout_up_to_max_timeout_is_valid_and_a_longer_one_names_the_option()
    {
        var options = new RunnerOptions { MaxTimeout = TimeSpan.FromDays(7) };
        Assert.Null(InvocationValidator.Validate(Invocation("echo") with { Timeout = TimeSpan.FromDays(7) }, options));
        var reason = InvocationValidator.Validate(Invocation("echo") with { Timeout = TimeSpan.FromDays(60) }, options);
        Assert.Contains("Timeout 60.00:00:00 is over the limit of 7.00:00:00 (Runner:MaxTimeout)", reason);
        Assert.Contains("negative", InvocationValidator.Validate(Invocation("echo") with { Timeout = TimeSpan.FromSeconds(-1) }, options));
    }

    [Fact]
    public void Slots_default_to_the_larger_of_the_minimum_and_the_cpu_count()
    {
        Assert.Equal(Math.Max(7, Environment.ProcessorCount), new RunnerOptions { MinSlots = 7 }.EffectiveSlots);
        Assert.Equal(1, new RunnerOptions { Slots = 1, MinSlots = 7 }.EffectiveSlots);
    }

    static RunInvocation Invocation(string taskName) => new() { InvocationId = Guid.NewGuid(), TaskName = taskName };
}
