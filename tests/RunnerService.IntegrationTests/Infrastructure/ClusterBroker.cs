using System.Diagnostics;
using System.Globalization;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;

namespace RunnerService.IntegrationTests.Infrastructure;

/// <summary>
/// A 3-node RabbitMQ cluster of the test class's own, started and stopped with deploy/local/rabbitmq-cluster.sh on
/// ports no other test uses (AMQP 5961-5963, management 15961-15963, epmd 4661). Tests isolate themselves with a
/// virtual host each; a node killed by a test is started again before the next one.
/// </summary>
public sealed class ClusterBroker : IAsyncLifetime
{
    public const int Nodes = 3;
    const int BasePort = 5961;
    const string Directory = "/tmp/runnerservice-test-cluster";
    readonly HttpClient _management = new() { BaseAddress = new Uri($"http://127.0.0.1:{BasePort + 10000}/") };
    readonly HashSet<int> _down = [];

    public ClusterBroker() =>
        _management.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Basic", Convert.ToBase64String(Encoding.UTF8.GetBytes("guest:guest")));

    /// <summary>Node <paramref name="node"/>'s AMQP URL (1-based) on a virtual host.</summary>
    public static Uri NodeUri(int node, string virtualHost) =>
        new($"amqp://guest:guest@127.0.0.1:{BasePort + node - 1}/{Uri.EscapeDataString(virtualHost)}");

    /// <summary>
    /// <c>ConnectionStrings:RabbitMq</c> listing every node, starting with <paramref name="first"/>: the node a replica
    /// connects to first.
    /// </summary>
    public static string ConnectionString(string virtualHost, int first = 1) =>
        string.Join(',', Enumerable.Range(0, Nodes).Select(i => NodeUri((first - 1 + i) % Nodes + 1, virtualHost)));

    public async Task InitializeAsync() => await RunAsync("start", Nodes.ToString(CultureInfo.InvariantCulture));

    public async Task<string> CreateVirtualHostAsync(string testName)
    {
        var name = $"c-{testName}-{Guid.NewGuid():N}"[..Math.Min(50, testName.Length + 35)];
        (await _management.PutAsync($"api/vhosts/{Uri.EscapeDataString(name)}", null)).EnsureSuccessStatusCode();
        using var permissions = new StringContent("{\"configure\":\".*\",\"write\":\".*\",\"read\":\".*\"}", Encoding.UTF8, "application/json");
        (await _management.PutAsync($"api/permissions/{Uri.EscapeDataString(name)}/guest", permissions)).EnsureSuccessStatusCode();
        return name;
    }

    /// <summary>A queue as the management API reports it (type, arguments, message counts, leader node).</summary>
    public async Task<JsonElement> QueueAsync(string virtualHost, string queue)
    {
        using var response = await _management.GetAsync($"api/queues/{Uri.EscapeDataString(virtualHost)}/{Uri.EscapeDataString(queue)}");
        response.EnsureSuccessStatusCode();
        return JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement.Clone();
    }

    public async Task<IReadOnlyList<string>> QueueNamesAsync(string virtualHost)
    {
        using var response = await _management.GetAsync($"api/queues/{Uri.EscapeDataString(virtualHost)}?columns=name");
        response.EnsureSuccessStatusCode();
        using var doc = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        return [.. doc.RootElement.EnumerateArray().Select(q => q.GetProperty("name").GetString()!)];
    }

    /// <summary>SIGKILL or SIGTERM to one node's broker (never node 1: it serves the management API the tests read).</summary>
    public async Task KillNodeAsync(int node, string signal)
    {
        if (node == 1)
            throw new ArgumentOutOfRangeException(nameof(node), "node 1 serves the management API the tests use");
        _down.Add(node);
        await RunAsync("kill-node", node.ToString(CultureInfo.InvariantCulture), signal);
    }

    public async Task StartNodeAsync(int node)
    {
        await RunAsync("start-node", node.ToString(CultureInfo.InvariantCulture));
        _down.Remove(node);
    }

    /// <summary>Starts again every node a test killed (for the next test of the class).</summary>
    public async Task HealAsync()
    {
        foreach (var node in _down.ToList())
            await StartNodeAsync(node);
    }

    async Task RunAsync(params string[] arguments)
    {
        var start = new ProcessStartInfo("bash") { RedirectStandardOutput = true, RedirectStandardError = true };
        start.ArgumentList.Add(Path.Combine(RepoPaths.Root, "deploy", "local", "rabbitmq-cluster.sh"));
        foreach (var argument in arguments)
            start.ArgumentList.Add(argument);
        start.Environment["RUNNER_CLUSTER_DIR"] = Directory;
        start.Environment["RUNNER_CLUSTER_PORT"] = BasePort.ToString(CultureInfo.InvariantCulture);
        start.Environment["RUNNER_CLUSTER_EPMD_PORT"] = "4661";
        using var process = Process.Start(start)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        await process.WaitForExitAsync();
        if (process.ExitCode != 0)
            throw new InvalidOperationException($"rabbitmq-cluster.sh {string.Join(' ', arguments)} failed ({process.ExitCode}):\n{await stdout}\n{await stderr}");
    }

    public async Task DisposeAsync()
    {
        _management.Dispose();
        await RunAsync("stop");
        try
        {
            System.IO.Directory.Delete(Directory, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}
