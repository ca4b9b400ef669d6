using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using RunnerService.Contracts;
using RunnerService.IntegrationTests.Infrastructure;
using Xunit.Abstractions;

namespace RunnerService.IntegrationTests;

/// <summary><c>GET /invocations/{id}</c>: the saga's record over HTTP, the same report the CLI's <c>status</c> prints.</summary>
[Collection(BrokerCollection.Name)]
[Trait("Category", "Observability")]
public sealed class InvocationStatusHttpTests(BrokerFixture broker, ITestOutputHelper output)
{
    static readonly TimeSpan Patience = TimeSpan.FromSeconds(60);

    [Fact]
    public async Task Get_invocation_returns_the_status_report_of_a_finished_fib_with_its_history_and_404_for_an_unknown_id()
    {
        await using var env = await RunnerEnvironment.StartAsync(broker, output, slots: 2);
        using var http = new HttpClient { BaseAddress = env.Runner.HttpBase, Timeout = TimeSpan.FromSeconds(10) };
        var id = Guid.NewGuid();
        var completed = await env.Bus.Client.RunAsync(new RunInvocation { InvocationId = id, TaskName = "fib", Arguments = Json.Parse("{\"n\":4}") }).WaitAsync(Patience);
        Assert.Equal(InvocationStatus.Succeeded, completed.Status);

        // The saga records the completion a moment after it is published.
        var overHttp = await TestBus.PollAsync(async () =>
        {
            var report = await http.GetFromJsonAsync<InvocationStatusReport>($"invocations/{id}", Web);
            return report is { Status: "Succeeded" } ? report : null;
        }, Patience, "the finished fib over HTTP");
        var overBus = await env.Bus.Client.GetStatusAsync(id);
        var raw = await http.GetStringAsync($"invocations/{id}");
        output.WriteLine(raw);

        Assert.True(overHttp.Found);
        Assert.Equal(id, overHttp.InvocationId);
        Assert.Equal("fib", overHttp.TaskName);
        Assert.Equal(completed.Result!.Value.GetRawText(), overHttp.Result!.Value.GetRawText());
        // fib 4 waits for its two children: the history shows the wait and the resume, then the end.
        Assert.Contains(overHttp.History, h => h.To == "Waiting");
        Assert.Equal("Succeeded", overHttp.History[^1].To);
        Assert.Equal(JsonSerializer.Serialize(overBus, Web), JsonSerializer.Serialize(overHttp, Web));
        using (var document = JsonDocument.Parse(raw))
            Assert.True(document.RootElement.TryGetProperty("invocationId", out _), "camelCase names, as on the wire");

        // Its children are listed (fib 4 waits for fib 3 and fib 2), and each is there under its own id, the parent named.
        var children = env.Bus.Completed.Where(c => c.ParentInvocationId == id).Select(c => c.InvocationId).ToHashSet();
        Assert.Equal(2, children.Count);
        Assert.True(children.SetEquals(overHttp.Children), $"children [{string.Join(", ", overHttp.Children)}]");
        var child = Assert.Single(env.Bus.Completed, c => c.ParentInvocationId == id && c.Result!.Value.GetInt32() == 2);
        var childReport = await http.GetFromJsonAsync<InvocationStatusReport>($"invocations/{child.InvocationId}", Web);
        Assert.Equal(id, childReport!.ParentInvocationId);

        var unknown = await http.GetAsync($"invocations/{Guid.NewGuid()}");
        Assert.Equal(HttpStatusCode.NotFound, unknown.StatusCode);
        Assert.Equal(HttpStatusCode.MethodNotAllowed, (await http.DeleteAsync($"invocations/{id}")).StatusCode);
    }

    static readonly JsonSerializerOptions Web = new(JsonSerializerDefaults.Web);
}
