using System.Text.Json;

namespace RunnerService.IntegrationTests.Infrastructure;

static class Json
{
    public static JsonElement Parse(string json) => JsonDocument.Parse(json).RootElement.Clone();
}
