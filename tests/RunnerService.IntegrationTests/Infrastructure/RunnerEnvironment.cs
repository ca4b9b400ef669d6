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
        StateDirectory = Directory.CreateTempSubdirectory("runner-test-").FullName;
    }

    /// <summary>Private folder of this test: the replicas' shared SQLite saga store lives here.</summary>
    public string StateDirectory { get; }

    public string SagaDatabase => Path.Combine(StateDirectory, "sagas.db");

    /// <summary>When true (the default), disposing checks every saga history in the store against docs/waiting.md.</summary>
    public bool VerifySagasOnDispose { get; set; } = true;

    public TestVirtualHost VirtualHost { get; }
    public TestBus Bus { get; }
    public RunnerProcess Runner => _runners[0];
    public IReadOnlyList<RunnerProcess> Runners => _runners;

    public static async Task<RunnerEnvironment> StartAsync(BrokerFixture broker, ITestOutputHelper output, int slots,
        IReadOnlyDictionary<string, string>? settings = null, int runners = 1, Uri? brokerOverride = null, [CallerMemberName] string testName = "")
    {
        // A test on a private broker uses its default virtual host; all others get a fresh one on the shared broker.
        var vhost = brokerOverride is null
            ? await broker.CreateVirtualHostAsync(new string([.. testName.Where(char.IsAsciiLetterOrDigit).Take(20)]).ToLowerInvariant())
            : new TestVirtualHost("/", brokerOverride, null);
        var bus = await TestBus.StartAsync(vhost.AmqpUri);
        var environment = new RunnerEnvironment(vhost, bus, output);
        try
        {
            for (var i = 0; i < runners; i++)
                await environment.StartRunnerAsync(slots, settings);
        }
        catch
        {
            environment.VerifySagasOnDispose = false;
            await environment.DisposeAsync();
            throw;
        }
        return environment;
    }

    public async Task<RunnerProcess> StartRunnerAsync(int? slots, IReadOnlyDictionary<string, string>? settings = null, string? instanceId = null, int? openFileLimit = null,
        string? serviceDll = null, string? workingDirectory = null)
    {
        var merged = new Dictionary<string, string> { ["ConnectionStrings__Sagas"] = $"Data Source={SagaDatabase}" };
        foreach (var (key, value) in settings ?? new Dictionary<string, string>())
            merged[key] = value;
        var runner = await RunnerProcess.StartAsync(VirtualHost.AmqpUri, _output, slots, merged, instanceId, openFileLimit, serviceDll, workingDirectory);
        _runners.Add(runner);
        return runner;
    }

    /// <summary>Waits until the saga queue has been empty for a moment: the saga has seen every event so far.</summary>
    public async Task WaitForSagaQuietAsync(TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        var quietSamples = 0;
        while (quietSamples < 3 && DateTime.UtcNow < deadline)
        {
            try
            {
                quietSamples = await Bus.ReadyMessagesAsync("invocation-state") == 0 ? quietSamples + 1 : 0;
            }
            catch (RabbitMQ.Client.Exceptions.OperationInterruptedException)
            {
                return; // no saga queue: nothing to wait for
            }
            catch (RabbitMQ.Client.Exceptions.BrokerUnreachableException)
            {
                return; // the test stopped its broker
            }
            await Task.Delay(200);
        }
    }

    public async ValueTask DisposeAsync()
    {
        try
        {
            if (VerifySagasOnDispose && _runners.Any(r => !r.HasExited))
                await WaitForSagaQuietAsync(TimeSpan.FromSeconds(15));
        }
        finally
        {
            // Whatever happened above, no runner process may outlive its test.
            foreach (var runner in _runners)
                await runner.DisposeAsync();
            await Bus.DisposeAsync();
            await VirtualHost.DisposeAsync();
        }
        try
        {
            if (VerifySagasOnDispose && File.Exists(SagaDatabase))
                SagaAudit.Verify(SagaDatabase, _output);
        }
        finally
        {
            Directory.Delete(StateDirectory, recursive: true);
        }
    }
}
