using System.Text.Json;
using RunnerService.Cli;
using RunnerService.Contracts;

namespace RunnerService.Tests;

[Trait("Category", "Unit")]
public sealed class StatusJsonTests
{
    [Fact]
    public void Status_json_names_a_process_only_when_one_is_known()
    {
        var unknown = JsonDocument.Parse(StatusCommand.ToJson(new InvocationStatusReport { Found = true, Status = "Cancelled", ProcessId = 0 })).RootElement;
        Assert.False(unknown.TryGetProperty("processId", out _));
        Assert.Equal("Cancelled", unknown.GetProperty("status").GetString());

        var known = JsonDocument.Parse(StatusCommand.ToJson(new InvocationStatusReport { Found = true, Status = "Succeeded", ProcessId = 4242 })).RootElement;
        Assert.Equal(4242, known.GetProperty("processId").GetInt32());
    }
}
