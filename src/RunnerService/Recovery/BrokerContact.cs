using Microsoft.Extensions.Options;
using RunnerService.Hosting;

namespace RunnerService.Recovery;

/// <summary>
/// When this replica last had the broker confirm one of its heartbeats: its own view of whether peers still hear it.
/// Without contact for half of <see cref="RunnerOptions.StaleAfter"/> it takes no new work; for three quarters, it
/// kills its workers (RecoveryService); peers reroute only after all of it plus a heartbeat interval.
/// </summary>
public sealed class BrokerContact(IOptions<RunnerOptions> options, TimeProvider time)
{
    long _lastTicks = time.GetUtcNow().UtcTicks;

    public void Confirmed()
    {
        Interlocked.Exchange(ref _lastTicks, time.GetUtcNow().UtcTicks);
        lock (_fenceGate)
        {
            if (_fence.IsCancellationRequested)
                _fence = new CancellationTokenSource(); // the old one is not disposed: a publish may be linking to it
        }
    }

    readonly Lock _fenceGate = new();
    CancellationTokenSource _fence = new();

    /// <summary>
    /// Cancelled when this replica fences itself (<see cref="Fence"/>), renewed by its next confirmed heartbeat. A
    /// completion publish runs under it: one still unconfirmed when the replica loses contact for so long that its peers
    /// may soon reroute its work is cancelled, and its retry reads the saga again once contact is back.
    /// </summary>
    public CancellationToken FenceToken
    {
        get
        {
            lock (_fenceGate)
                return _fence.Token;
        }
    }

    /// <summary>This replica has been without contact for <see cref="MustFence"/>: cancels <see cref="FenceToken"/>.</summary>
    public void Fence()
    {
        CancellationTokenSource fence;
        lock (_fenceGate)
            fence = _fence;
        if (!fence.IsCancellationRequested)
            fence.Cancel(); // outside the lock: the cancelled publishes' callbacks run here
    }

    /// <summary>How long since the last confirmed heartbeat.</summary>
    public TimeSpan Silence => time.GetUtcNow() - new DateTimeOffset(Interlocked.Read(ref _lastTicks), TimeSpan.Zero);

    /// <summary>True while the replica should take no new work.</summary>
    public bool IntakeStopped => Silence > options.Value.StaleAfter / 2;

    /// <summary>True once the replica must have killed its own workers.</summary>
    public bool MustFence => Silence > options.Value.StaleAfter * 0.75;

    /// <summary>
    /// True when nothing this replica published has been confirmed for <see cref="RunnerOptions.StaleAfter"/> although
    /// its bus has been connected (every receive endpoint ready) for half of it: the connection consumes but its
    /// publishes hang (seen after broker restarts: RabbitMQ.Client 7.2 publishes that never end). Only a new
    /// connection helps. A broker that is away (the bus is not connected), or one that just came back (its first
    /// heartbeat confirms within an interval), is not that.
    /// </summary>
    public bool PublishingStuck(TimeSpan? connectedFor) =>
        Silence > options.Value.StaleAfter && connectedFor > options.Value.StaleAfter / 2;

    long _echoTicks = time.GetUtcNow().UtcTicks;

    int _ownQueueConsumes;

    /// <summary>Something (an <see cref="InstanceEcho"/>, a resume, an abandon) came through this replica's own queue.</summary>
    public void EchoHeard() => Interlocked.Exchange(ref _echoTicks, time.GetUtcNow().UtcTicks);

    /// <summary>
    /// A consume on the own queue begins; dispose when it ends. While any runs (resumes wait there for a slot, for as
    /// long as running work holds the slots), an echo may wait behind them in the prefetch: the queue is busy, not deaf.
    /// </summary>
    public IDisposable OwnQueueConsume()
    {
        EchoHeard();
        Interlocked.Increment(ref _ownQueueConsumes);
        return new Ended(this);
    }

    sealed class Ended(BrokerContact contact) : IDisposable
    {
        int _done;

        public void Dispose()
        {
            if (Interlocked.Exchange(ref _done, 1) == 0)
            {
                Interlocked.Decrement(ref contact._ownQueueConsumes);
                contact.EchoHeard();
            }
        }
    }

    /// <summary>How long since this replica's own queue last delivered its echo (or since start).</summary>
    public TimeSpan EchoSilence => time.GetUtcNow() - new DateTimeOffset(Interlocked.Read(ref _echoTicks), TimeSpan.Zero);

    /// <summary>
    /// True when the broker takes this replica's heartbeats but its own queue has delivered nothing for
    /// <see cref="RunnerOptions.StaleAfter"/>, and no consume of it is in progress: its consumer did not come back (seen after partitions and broker
    /// restarts), so resumes never reach its paused workers. Only a restart of the replica helps (its shutdown
    /// reroutes them), so liveness and readiness fail.
    /// </summary>
    public bool OwnQueueDeaf => EchoSilence > options.Value.StaleAfter && Silence < options.Value.StaleAfter / 2
        && Volatile.Read(ref _ownQueueConsumes) == 0;
}
