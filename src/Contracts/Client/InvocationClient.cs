using System.Collections.Concurrent;
using System.Text.Json;
using MassTransit;

namespace RunnerService.Contracts.Client;

/// <summary>
/// Publishes <see cref="RunInvocation"/> and matches <see cref="InvocationCompleted"/> events by id.
/// <see cref="RunAsync(RunInvocation, CancellationToken)"/> names this client's own temporary queue as the reply
/// address (MassTransit's <c>ResponseAddress</c>): the runner sends the completion there, and the queue receives
/// nothing else. It is connected on first use, before the first publish. Only
/// <see cref="WaitForCompletionAsync"/> and <see cref="CompletionObserved"/> bind a second temporary queue to the
/// completion exchange, which carries every completion in the cluster.
/// </summary>
public sealed class InvocationClient(IBus bus) : IInvocationClient, IAsyncDisposable
{
    readonly ConcurrentDictionary<Guid, TaskCompletionSource<InvocationCompleted>> _pending = new();
    readonly SemaphoreSlim _connectLock = new(1, 1);
    HostReceiveEndpointHandle? _replies;
    HostReceiveEndpointHandle? _all;

    /// <summary>
    /// Raised for every completion in the cluster, sub-invocations and other publishers' work included. Subscribing
    /// makes the next call of this client bind its second queue to the completion exchange, with that traffic.
    /// </summary>
    public event Action<InvocationCompleted>? CompletionObserved;

    /// <summary>Raised for each progress event of an invocation this client runs (<see cref="RunAsync(RunInvocation, CancellationToken)"/>).</summary>
    public event Action<InvocationProgress>? ProgressObserved;

    /// <summary>The queue the completions of <see cref="RunAsync(RunInvocation, CancellationToken)"/> arrive on, once connected.</summary>
    public Uri? ReplyAddress => _replies?.ReceiveEndpoint.InputAddress;

    public async Task SubmitAsync(RunInvocation invocation, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(invocation);
        if (CompletionObserved is not null)
            await ConnectAsync(all: true, cancellationToken).ConfigureAwait(false);
        await bus.Publish(Stamped(invocation), cancellationToken).ConfigureAwait(false);
    }

    static RunInvocation Stamped(RunInvocation invocation) =>
        invocation.SubmittedAt is null ? invocation with { SubmittedAt = DateTimeOffset.UtcNow } : invocation;

    public Task<InvocationCompleted> RunAsync(string taskName, JsonElement? arguments, CancellationToken cancellationToken = default) =>
        RunAsync(new RunInvocation { InvocationId = NewId.NextGuid(), TaskName = taskName, Arguments = arguments }, cancellationToken);

    public async Task<InvocationCompleted> RunAsync(RunInvocation invocation, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(invocation);
        if (!string.IsNullOrEmpty(invocation.ReplyTo))
            throw new ArgumentException("RunAsync receives the completion on this client's own queue; publish with SubmitAsync to send it elsewhere", nameof(invocation));
        var replyAddress = await ConnectAsync(all: CompletionObserved is not null, cancellationToken).ConfigureAwait(false);
        var completion = Register(invocation.InvocationId);
        try
        {
            await bus.Publish(Stamped(invocation), context => context.ResponseAddress = replyAddress, cancellationToken).ConfigureAwait(false);
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
        await ConnectAsync(all: true, cancellationToken).ConfigureAwait(false);
        return await AwaitAsync(invocationId, Register(invocationId), cancellationToken).ConfigureAwait(false);
    }

    public async Task<CancelInvocationReply> CancelAsync(Guid invocationId, string? reason = null, string? requestedBy = null, CancellationToken cancellationToken = default)
    {
        var client = bus.CreateRequestClient<CancelInvocation>(RequestTimeout.After(s: 30));
        var response = await client.GetResponse<CancelInvocationReply>(new CancelInvocation
        {
            InvocationId = invocationId,
            Reason = reason,
            RequestedBy = requestedBy ?? $"{Environment.UserName}@{Environment.MachineName}",
        }, cancellationToken).ConfigureAwait(false);
        return response.Message;
    }

    public async Task<InvocationStatusReport> GetStatusAsync(Guid invocationId, CancellationToken cancellationToken = default)
    {
        var client = bus.CreateRequestClient<GetInvocationStatus>(RequestTimeout.After(s: 30));
        var response = await client.GetResponse<InvocationStatusReport>(new GetInvocationStatus { InvocationId = invocationId }, cancellationToken).ConfigureAwait(false);
        return response.Message;
    }

    TaskCompletionSource<InvocationCompleted> Register(Guid invocationId) =>
        _pending.GetOrAdd(invocationId, _ => new TaskCompletionSource<InvocationCompleted>(TaskCreationOptions.RunContinuationsAsynchronously));

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

    /// <summary>Connects the reply queue (and, when <paramref name="all"/>, the completion-exchange queue); returns the reply address.</summary>
    async Task<Uri> ConnectAsync(bool all, CancellationToken cancellationToken)
    {
        if (_replies is not null && (!all || _all is not null))
            return _replies.ReceiveEndpoint.InputAddress;
        await _connectLock.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            // Only what is sent to it: no binding to the completion exchange.
            _replies ??= await ConnectEndpointAsync("invocation-client", bindToExchange: false, cancellationToken).ConfigureAwait(false);
            if (all)
                _all ??= await ConnectEndpointAsync("invocation-client-all", bindToExchange: true, cancellationToken).ConfigureAwait(false);
            return _replies.ReceiveEndpoint.InputAddress;
        }
        finally
        {
            _connectLock.Release();
        }
    }

    async Task<HostReceiveEndpointHandle> ConnectEndpointAsync(string tag, bool bindToExchange, CancellationToken cancellationToken)
    {
        var handle = bus.ConnectReceiveEndpoint(new TemporaryEndpointDefinition(tag), KebabCaseEndpointNameFormatter.Instance, cfg =>
        {
            cfg.ConfigureConsumeTopology = bindToExchange;
            // MassTransit also sends a rejected invocation's Fault<RunInvocation> to its response address: the
            // InvocationCompleted (InvalidInvocation) says it all, and nothing is left in a _skipped queue.
            cfg.DiscardSkippedMessages();
            cfg.Handler<InvocationCompleted>(context =>
            {
                OnCompleted(context.Message, observed: bindToExchange);
                return Task.CompletedTask;
            });
            if (!bindToExchange)
            {
                // Sent to the reply queue only (never bound to the progress exchange here).
                cfg.Handler<InvocationProgress>(context =>
                {
                    ProgressObserved?.Invoke(context.Message);
                    return Task.CompletedTask;
                });
            }
        });
        try
        {
            await handle.Ready.WaitAsync(cancellationToken).ConfigureAwait(false);
            return handle;
        }
        catch
        {
            await handle.StopAsync(CancellationToken.None).ConfigureAwait(false);
            throw;
        }
    }

    void OnCompleted(InvocationCompleted completed, bool observed)
    {
        if (_pending.TryGetValue(completed.InvocationId, out var completion))
            completion.TrySetResult(completed);
        if (observed)
            CompletionObserved?.Invoke(completed);
    }

    public async ValueTask DisposeAsync()
    {
        if (_replies is not null)
            await _replies.StopAsync().ConfigureAwait(false);
        if (_all is not null)
            await _all.StopAsync().ConfigureAwait(false);
        _connectLock.Dispose();
    }
}
