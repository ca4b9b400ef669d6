using System.Text.Json;
using RunnerService.Processes;

namespace RunnerService.Tests;

[Trait("Category", "Unit")]
public class ChildIdsTests
{
    static readonly Guid Parent = Guid.Parse("0f8fad5b-d9cb-469f-a165-70867728950e");

    static JsonElement Json(string text) => JsonDocument.Parse(text).RootElement;

    [Fact]
    public void The_same_parent_position_task_and_arguments_give_the_same_id_every_time()
    {
        Assert.Equal(ChildIds.Derive(Parent, 1, "fib", Json("{\"n\":3}")), ChildIds.Derive(Parent, 1, "fib", Json("{\"n\":3}")));
        Assert.Equal(8, ChildIds.Derive(Parent, 1, "fib", null).Version);
    }

    [Fact]
    public void Another_position_task_arguments_or_parent_gives_another_id()
    {
        var id = ChildIds.Derive(Parent, 1, "fib", Json("{\"n\":3}"));
        Assert.NotEqual(id, ChildIds.Derive(Parent, 2, "fib", Json("{\"n\":3}")));
        Assert.NotEqual(id, ChildIds.Derive(Parent, 1, "fanout", Json("{\"n\":3}")));
        Assert.NotEqual(id, ChildIds.Derive(Parent, 1, "fib", Json("{\"n\":4}")));
        Assert.NotEqual(id, ChildIds.Derive(Guid.NewGuid(), 1, "fib", Json("{\"n\":3}")));
    }
}
