using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;

namespace RunnerService.Bench.Chaos;

/// <summary>
/// A TCP proxy between one replica and the broker, so the chaos run can cut that replica off alone. <see cref="Cut"/>
/// resets every open connection (both ends) and, until <see cref="Heal"/>, either black-holes new connections
/// (accepts them and forwards nothing, as a silent network does) or refuses them (the listener is closed).
/// </summary>
sealed class PartitionProxy : IAsyncDisposable
{
    readonly IPEndPoint _target;
    readonly bool _refuse;
    readonly ConcurrentDictionary<long, (TcpClient Client, TcpClient Upstream)> _pairs = new();
    readonly ConcurrentDictionary<long, TcpClient> _held = new();
    readonly CancellationTokenSource _stop = new();
    readonly object _gate = new();
    TcpListener _listener;
    Task _accepting;
    long _next;
    volatile bool _cut;

    public PartitionProxy(IPEndPoint target, bool refuseDuringCut)
    {
        _target = target;
        _refuse = refuseDuringCut;
        _listener = new TcpListener(IPAddress.Loopback, 0);
        _listener.Start();
        Port = ((IPEndPoint)_listener.LocalEndpoint).Port;
        _accepting = AcceptLoopAsync(_listener);
    }

    public int Port { get; }

    /// <summary>Connections forwarded since the start, and connections held (black-holed) during cuts.</summary>
    public int Forwarded => Volatile.Read(ref _forwarded);
    public int BlackHoled => Volatile.Read(ref _blackHoled);
    int _forwarded, _blackHoled;

    public bool IsCut => _cut;

    /// <summary>Resets every forwarded connection and stops forwarding; returns how many connections were reset.</summary>
    public int Cut()
    {
        lock (_gate)
        {
            _cut = true;
            if (_refuse)
                _listener.Stop();
            var reset = 0;
            foreach (var (id, pair) in _pairs)
            {
                if (_pairs.TryRemove(id, out _))
                {
                    Reset(pair.Client);
                    Reset(pair.Upstream);
                    reset++;
                }
            }
            return reset;
        }
    }

    /// <summary>Forwards again: black-holed connections are reset (their clients reconnect), a closed listener reopens.</summary>
    public void Heal()
    {
        lock (_gate)
        {
            foreach (var (id, client) in _held)
            {
                if (_held.TryRemove(id, out _))
                    Reset(client);
            }
            if (_refuse)
            {
                _listener = new TcpListener(IPAddress.Loopback, Port);
                _listener.Server.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ReuseAddress, true);
                _listener.Start();
                _accepting = AcceptLoopAsync(_listener);
            }
            _cut = false;
        }
    }

    async Task AcceptLoopAsync(TcpListener listener)
    {
        while (!_stop.IsCancellationRequested)
        {
            TcpClient client;
            try
            {
                client = await listener.AcceptTcpClientAsync(_stop.Token);
            }
            catch (Exception ex) when (ex is OperationCanceledException or SocketException or ObjectDisposedException)
            {
                return; // stopped (a cut in refuse mode, or the end)
            }
            var id = Interlocked.Increment(ref _next);
            if (_cut)
            {
                Interlocked.Increment(ref _blackHoled);
                _held[id] = client;
                continue;
            }
            _ = ForwardAsync(id, client);
        }
    }

    async Task ForwardAsync(long id, TcpClient client)
    {
        var upstream = new TcpClient { NoDelay = true };
        client.NoDelay = true;
        try
        {
            await upstream.ConnectAsync(_target, _stop.Token);
        }
        catch (Exception ex) when (ex is SocketException or OperationCanceledException)
        {
            Reset(client);
            upstream.Dispose();
            return;
        }
        lock (_gate)
        {
            if (_cut)
            {
                // Cut while connecting: this one is black-holed like any new connection.
                upstream.Dispose();
                Interlocked.Increment(ref _blackHoled);
                _held[id] = client;
                return;
            }
            _pairs[id] = (client, upstream);
        }
        Interlocked.Increment(ref _forwarded);
        var a = Pump(client, upstream);
        var b = Pump(upstream, client);
        await Task.WhenAny(a, b);
        if (_pairs.TryRemove(id, out _))
        {
            // One side closed on its own: close the other side too (as the broker or the client would see it).
            client.Dispose();
            upstream.Dispose();
        }
        await Task.WhenAll(a, b);
    }

    async Task Pump(TcpClient from, TcpClient to)
    {
        var buffer = new byte[64 * 1024];
        try
        {
            var source = from.GetStream();
            var sink = to.GetStream();
            while (true)
            {
                var n = await source.ReadAsync(buffer, _stop.Token);
                if (n == 0)
                    return;
                await sink.WriteAsync(buffer.AsMemory(0, n), _stop.Token);
            }
        }
        catch (Exception ex) when (ex is IOException or SocketException or ObjectDisposedException or OperationCanceledException or InvalidOperationException)
        {
        }
    }

    /// <summary>Closes with RST (linger 0): the peer learns at once, as when a route disappears and a firewall answers.</summary>
    static void Reset(TcpClient client)
    {
        try
        {
            client.Client.LingerState = new LingerOption(true, 0);
        }
        catch (Exception ex) when (ex is SocketException or ObjectDisposedException)
        {
        }
        client.Dispose();
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        _listener.Stop();
        foreach (var (_, pair) in _pairs)
        {
            pair.Client.Dispose();
            pair.Upstream.Dispose();
        }
        foreach (var (_, held) in _held)
            held.Dispose();
        try
        {
            await _accepting;
        }
        catch (Exception ex) when (ex is SocketException or ObjectDisposedException)
        {
        }
        _stop.Dispose();
    }
}
