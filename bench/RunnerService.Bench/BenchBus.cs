using System.Collections.Concurrent;
using System.Diagnostics;
using MassTransit;
using RunnerService.Contracts;
using RunnerService.Contracts.Client;

namespace RunnerService.Bench;

/// <summary>
/// The bench's own MassTransit bus on a scenario's virtual host: the public <see cref="InvocationClient"/> (as any
/// publishing service would use it) plus, when asked, a record of the events the runner publishes.
/// </summary>
sealed class BenchBus : IAsyncDisposable
{
    readonly IBusControl _bus;

    BenchBus(IBusControl bus)
    {
        _bus = bus;
        Client = new InvocationClient(bus);
    }

    public InvocationClient Client { get; }
    public EventLog<InvocationStarted> Started { get; } = new(m => m.InvocationId);
    public EventLog<InvocationWaitingFor> Waiting { get; } = new(m => m.InvocationId);
    public EventLog<InvocationResumed> Resumed { get; } = new(m => m.InvocationId);

    /// <summary>Which runner events to record; each costs a delivery per invocation, so throughput runs record none.</summary>
    [Flags]
    public enum Events
    {
        None = 0,
        Started = 1,
        Waiting = 2,
        Resumed = 4,
    }

    public static async Task<BenchBus> StartAsync(Uri vhost, Events events)
    {
        BenchBus? self = null;
        var bus = Bus.Factory.CreateUsingRabbitMq(cfg =>
        {
            cfg.Host(vhost);
            if (events != Events.None)
            {
                cfg.ReceiveEndpoint(new TemporaryEndpointDefinition("bench-events"), KebabCaseEndpointNameFormatter.Instance, e =>
                {
                    e.PrefetchCount = 256;
                    if (events.HasFlag(Events.Started))
                        e.Handler<InvocationStarted>(c => { self!.Started.Add(c.Message); return Task.CompletedTask; });
                    if (events.HasFlag(Events.Waiting))
                        e.Handler<InvocationWaitingFor>(c => { self!.Waiting.Add(c.Message); return Task.CompletedTask; });
                    if (events.HasFlag(Events.Resumed))
                        e.Handler<InvocationResumed>(c => { self!.Resumed.Add(c.Message); return Task.CompletedTask; });
                });
            }
        });
        self = new BenchBus(bus);
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        await bus.StartAsync(cts.Token);
        return self;
    }

    public async ValueTask DisposeAsync()
    {
        await Client.DisposeAsync();
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        await _bus.StopAsync(cts.Token);
    }
}

/// <summary>Events by invocation id, with the bench's receive time (Stopwatch ticks); awaitable.</summary>
sealed class EventLog<T>(Func<T, Guid> key) where T : class
{
    readonly ConcurrentDictionary<Guid, TaskCompletionSource<(T Message, long ReceivedTicks)>> _events = new();

    public int Count => _events.Values.Count(t => t.Task.IsCompleted);

    public void Add(T message)
    {
        var received = Stopwatch.GetTimestamp();
        Slot(key(message)).TrySetResult((message, received));
    }

    public Task<(T Message, long ReceivedTicks)> WaitAsync(Guid id, TimeSpan timeout) => Slot(id).Task.WaitAsync(timeout);

    public bool TryGet(Guid id, out T message)
    {
        if (_events.TryGetValue(id, out var tcs) && tcs.Task.IsCompletedSuccessfully)
        {
            message = tcs.Task.Result.Message;
            return true;
        }
        message = null!;
        return false;
    }

    TaskCompletionSource<(T, long)> Slot(Guid id) =>
        _events.GetOrAdd(id, _ => new TaskCompletionSource<(T, long)>(TaskCreationOptions.RunContinuationsAsynchronously));
}
