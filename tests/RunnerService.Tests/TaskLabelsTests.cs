using RunnerService.Telemetry;

namespace RunnerService.Tests;

[Trait("Category", "Unit")]
public class TaskLabelsTests
{
    [Fact]
    public void The_first_distinct_names_up_to_the_limit_keep_their_label_and_later_ones_are_other()
    {
        var labels = new TaskLabels(3);
        Assert.Equal(["a", "b", "c"], new[] { "a", "b", "c" }.Select(labels.For));
        Assert.Equal(TaskLabels.Other, labels.For("d"));
        Assert.Equal(TaskLabels.Other, labels.For("e"));
        // Names seen before the cap filled keep their label for good.
        Assert.Equal("b", labels.For("b"));
    }

    [Fact]
    public void Names_that_break_the_task_name_rule_are_other_and_take_no_slot()
    {
        var labels = new TaskLabels(1);
        Assert.Equal(TaskLabels.Other, labels.For(""));
        Assert.Equal(TaskLabels.Other, labels.For("has space"));
        Assert.Equal(TaskLabels.Other, labels.For(new string('x', 5000)));
        Assert.Equal("echo", labels.For("echo"));
    }

    [Fact]
    public void Many_threads_never_admit_more_than_the_limit()
    {
        var labels = new TaskLabels(20);
        var seen = new System.Collections.Concurrent.ConcurrentBag<string>();
        Parallel.For(0, 10_000, i => seen.Add(labels.For($"task-{i % 1000}")));
        Assert.Equal(21, seen.Distinct().Count());
        Assert.Contains(TaskLabels.Other, seen);
    }
}
