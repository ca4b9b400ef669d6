using System.Collections.Concurrent;
using System.Text.Json;
using MassTransit;

namespace RunnerService.Contracts.Client;

/// <summary>
/// Publishes <see cref="RunInvocation"/> and matches <see cref="InvocationCompleted"/> events by id.
/// Completions arrive on a temporary queue of this client (auto-deleted when the bus stops), connected on first use
/// and before the first publish, so no completion of its own invocations can be missed.
/// </summary>
public sealed class InvocationClient(IBus bus) : IInvocationClient, IAsyncDisposable
{
    readonly ConcurrentDictionary<Guid, TaskCompletionSource<InvocationCompleted>> _pending = new();
    readonly SemaphoreSlim _connectLock = new(1, 1);
    HostReceiveEndpointHandle? _endpoint;

    public event Action<InvocationCompleted>? CompletionObserved;

    public async Task SubmitAsync(RunInvocation invocation, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(invocation);
        var message = invocation.SubmittedAt is null ? invocation with { SubmittedAt = DateTimeOffset.UtcNow } : invocation;
        await bus.Publish(message, cancellationToken).ConfigureAwait(false);
    }

    public Task<InvocationCompleted> RunAsync(string taskName, JsonElement? arguments, CancellationToken cancellationToken = default) =>
        RunAsync(new RunInvocation { InvocationId = NewId.NextGuid(), TaskName = taskName, Arguments = arguments }, cancellationToken);

    public async Task<InvocationCompleted> RunAsync(RunInvocation invocation, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(invocation);
        var completion = await RegisterAsync(invocation.InvocationId, cancellationToken).ConfigureAwait(false);
        try
        {
            await SubmitAsync(invocation, cancellationToken).ConfigureAwait(false);
        }
        catch
        {
            _pending.TryRemove(invocation.InvocationId, out _);
            throw;
        }
        return await AwaitAsync(invocation.InvocationId, completion, cancellationToken).ConfigureAwait(false);
    }

    public async Task<InvocationCompleted> WaitForCompletionAsync(Guid invocationId, CancellationToken cancellationToken = default)
    {
        var completion = await RegisterAsync(invocationId, cancellationToken).ConfigureAwait(false);
        return await AwaitAsync(invocationId, completion, cancellationToken).ConfigureAwait(false);
    }

    public async Task<InvocationStatusReport> GetStatusAsync(Guid invocationId, CancellationToken cancellationToken = default)
    {
        var client = bus.CreateRequestClient<GetInvocationStatus>(RequestTimeout.After(s: 30));
        var response = await client.GetResponse<InvocationStatusReport>(new GetInvocationStatus { InvocationId = invocationId }, cancellationToken).ConfigureAwait(false);
        return response.Message;
    }

    async Task<TaskCompletionSource<InvocationCompleted>> RegisterAsync(Guid invocationId, CancellationToken cancellationToken)
    {
        await EnsureConnectedAsync(cancellationToken).ConfigureAwait(false);
        return _pending.GetOrAdd(invocationId, _ => new TaskCompletionSource<InvocationCompleted>(TaskCreationOptions.RunContinuationsAsynchronously));
    }

    async Task<InvocationCompleted> AwaitAsync(Guid invocationId, TaskCompletionSource<InvocationCompleted> completion, CancellationToken cancellationToken)
    {
        try
        {
            return await completion.Task.WaitAsync(cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            _pending.TryRemove(invocationId, out _);
        }
    }

    async Task EnsureConnectedAsync(CancellationToken cancellationToken)
    {
        if (_endpoint is not null)
            return;
        await _connectLock.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            if (_endpoint is not null)
                return;
            var handle = bus.ConnectReceiveEndpoint(new TemporaryEndpointDefinition("invocation-client"), KebabCaseEndpointNameFormatter.Instance,
                cfg => cfg.Handler<InvocationCompleted>(context =>
                {
                    OnCompleted(context.Message);
                    return Task.CompletedTask;
                }));
            await handle.Ready.WaitAsync(cancellationToken).ConfigureAwait(false);
            _endpoint = handle;
        }
        finally
        {
            _connectLock.Release();
        }
    }

    void OnCompleted(InvocationCompleted completed)
    {
        if (_pending.TryGetValue(completed.InvocationId, out var completion))
            completion.TrySetResult(completed);
        CompletionObserved?.Invoke(completed);
    }

    public async ValueTask DisposeAsync()
    {
        if (_endpoint is not null)
            await _endpoint.StopAsync().ConfigureAwait(false);
        _connectLock.Dispose();
    }
}
