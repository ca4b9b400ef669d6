using System.Runtime.CompilerServices;
using Xunit.Abstractions;

namespace RunnerService.IntegrationTests.Infrastructure;

/// <summary>One test's world: its own virtual host, a test bus on it, and one or more RunnerService processes.</summary>
public sealed class RunnerEnvironment : IAsyncDisposable
{
    readonly List<RunnerProcess> _runners = [];
    readonly ITestOutputHelper _output;

    RunnerEnvironment(TestVirtualHost vhost, TestBus bus, ITestOutputHelper output)
    {
        VirtualHost = vhost;
        Bus = bus;
        _output = output;
    }

    public TestVirtualHost VirtualHost { get; }
    public TestBus Bus { get; }
    public RunnerProcess Runner => _runners[0];
    public IReadOnlyList<RunnerProcess> Runners => _runners;

    public static async Task<RunnerEnvironment> StartAsync(BrokerFixture broker, ITestOutputHelper output, int slots,
        IReadOnlyDictionary<string, string>? settings = null, int runners = 1, [CallerMemberName] string testName = "")
    {
        var vhost = await broker.CreateVirtualHostAsync(new string([.. testName.Where(char.IsAsciiLetterOrDigit).Take(20)]).ToLowerInvariant());
        var bus = await TestBus.StartAsync(vhost.AmqpUri);
        var environment = new RunnerEnvironment(vhost, bus, output);
        for (var i = 0; i < runners; i++)
            await environment.StartRunnerAsync(slots, settings);
        return environment;
    }

    public async Task<RunnerProcess> StartRunnerAsync(int slots, IReadOnlyDictionary<string, string>? settings = null, string? instanceId = null)
    {
        var runner = await RunnerProcess.StartAsync(VirtualHost.AmqpUri, _output, slots, settings, instanceId);
        _runners.Add(runner);
        return runner;
    }

    public async ValueTask DisposeAsync()
    {
        foreach (var runner in _runners)
            await runner.DisposeAsync();
        await Bus.DisposeAsync();
        await VirtualHost.DisposeAsync();
    }
}
