using System.Collections.Concurrent;
using MassTransit;
using RabbitMQ.Client;
using RunnerService.Contracts;
using RunnerService.Contracts.Client;

namespace RunnerService.IntegrationTests.Infrastructure;

/// <summary>
/// The test's own MassTransit bus on a test virtual host: the public client (as another service would use it)
/// plus a record of every event the runners publish.
/// </summary>
public sealed class TestBus : IAsyncDisposable
{
    readonly IBusControl _bus;

    TestBus(IBusControl bus, Uri broker)
    {
        _bus = bus;
        Broker = broker;
        Client = new InvocationClient(bus);
    }

    public Uri Broker { get; }
    public InvocationClient Client { get; }
    public IBus Bus => _bus;
    public ConcurrentQueue<InvocationStarted> Started { get; } = new();
    public ConcurrentQueue<InvocationCompleted> Completed { get; } = new();
    public ConcurrentQueue<InvocationWaitingFor> Waiting { get; } = new();
    public ConcurrentQueue<InvocationProgress> Progress { get; } = new();

    public static async Task<TestBus> StartAsync(Uri broker)
    {
        TestBus? self = null;
        var bus = MassTransit.Bus.Factory.CreateUsingRabbitMq(cfg =>
        {
            cfg.Host(broker);
            cfg.ReceiveEndpoint(new TemporaryEndpointDefinition("test-events"), KebabCaseEndpointNameFormatter.Instance, e =>
            {
                e.Handler<InvocationStarted>(c => { self!.Started.Enqueue(c.Message); return Task.CompletedTask; });
                e.Handler<InvocationCompleted>(c => { self!.Completed.Enqueue(c.Message); return Task.CompletedTask; });
                e.Handler<InvocationWaitingFor>(c => { self!.Waiting.Enqueue(c.Message); return Task.CompletedTask; });
                e.Handler<InvocationProgress>(c => { self!.Progress.Enqueue(c.Message); return Task.CompletedTask; });
            });
        });
        self = new TestBus(bus, broker);
        await bus.StartAsync(new CancellationTokenSource(TimeSpan.FromSeconds(60)).Token);
        return self;
    }

    public async Task<InvocationStarted> WaitForStartedAsync(Guid invocationId, TimeSpan timeout, int attempt = 0) =>
        await PollAsync(() => Started.FirstOrDefault(s => s.InvocationId == invocationId && (attempt == 0 || s.Attempt == attempt)), timeout, $"InvocationStarted for {invocationId}");

    public async Task<InvocationCompleted> WaitForCompletedAsync(Guid invocationId, TimeSpan timeout) =>
        await PollAsync(() => Completed.FirstOrDefault(s => s.InvocationId == invocationId), timeout, $"InvocationCompleted for {invocationId}");

    public Task TestWaitAsync(Func<bool> condition, TimeSpan timeout) =>
        PollAsync(() => condition() ? "yes" : null, timeout, "the condition");

    public static Task<T> PollAsync<T>(Func<T?> probe, TimeSpan timeout, string what) where T : class =>
        PollAsync(() => Task.FromResult(probe()), timeout, what);

    public static async Task<T> PollAsync<T>(Func<Task<T?>> probe, TimeSpan timeout, string what) where T : class
    {
        var deadline = DateTime.UtcNow + timeout;
        while (true)
        {
            if (await probe() is { } found)
                return found;
            if (DateTime.UtcNow > deadline)
                throw new TimeoutException($"{what} did not arrive within {timeout}");
            await Task.Delay(20);
        }
    }

    /// <summary>Ready (not yet delivered) messages in a queue, straight from the broker (not the delayed management statistics).</summary>
    public async Task<uint> ReadyMessagesAsync(string queue)
    {
        var factory = new ConnectionFactory { Uri = Broker };
        await using var connection = await factory.CreateConnectionAsync();
        await using var channel = await connection.CreateChannelAsync();
        var ok = await channel.QueueDeclarePassiveAsync(queue);
        return ok.MessageCount;
    }

    /// <summary>Publishes raw bytes to a queue's exchange, as a broken publisher would.</summary>
    public async Task PublishRawAsync(string exchange, byte[] body, string contentType)
    {
        var factory = new ConnectionFactory { Uri = Broker };
        await using var connection = await factory.CreateConnectionAsync();
        await using var channel = await connection.CreateChannelAsync();
        var properties = new BasicProperties { ContentType = contentType, Persistent = true, MessageId = Guid.NewGuid().ToString() };
        await channel.BasicPublishAsync(exchange, "", false, properties, body);
    }

    /// <summary>Takes one message from a queue (for example the error queue), or null when it is empty.</summary>
    public async Task<BasicGetResult?> GetAsync(string queue)
    {
        var factory = new ConnectionFactory { Uri = Broker };
        await using var connection = await factory.CreateConnectionAsync();
        await using var channel = await connection.CreateChannelAsync();
        try
        {
            return await channel.BasicGetAsync(queue, autoAck: true);
        }
        catch (RabbitMQ.Client.Exceptions.OperationInterruptedException ex) when (ex.ShutdownReason?.ReplyCode == 404)
        {
            return null; // the queue does not exist yet
        }
    }

    public async ValueTask DisposeAsync()
    {
        await Client.DisposeAsync();
        await _bus.StopAsync(new CancellationTokenSource(TimeSpan.FromSeconds(30)).Token);
    }
}
