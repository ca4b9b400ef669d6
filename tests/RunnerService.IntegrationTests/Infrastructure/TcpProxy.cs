using System.Net;
using System.Net.Sockets;

namespace RunnerService.IntegrationTests.Infrastructure;

/// <summary>
/// A TCP proxy on a loopback port in front of the broker, for partition tests: <see cref="Cut"/> drops every
/// connection through it and refuses new ones until <see cref="Heal"/>.
/// </summary>
public sealed class TcpProxy : IAsyncDisposable
{
    readonly TcpListener _listener = new(IPAddress.Loopback, 0);
    readonly IPEndPoint _target;
    readonly CancellationTokenSource _stop = new();
    readonly List<TcpClient> _open = [];
    readonly Lock _lock = new();
    readonly Task _accepting;
    volatile bool _cut;

    public TcpProxy(Uri target)
    {
        _target = new IPEndPoint(IPAddress.Loopback, target.Port);
        _listener.Start();
        Port = ((IPEndPoint)_listener.LocalEndpoint).Port;
        _accepting = AcceptAsync();
    }

    public int Port { get; }

    /// <summary>The AMQP URL of <paramref name="broker"/> (same credentials and virtual host) through this proxy.</summary>
    public Uri Through(Uri broker) => new UriBuilder(broker) { Port = Port }.Uri;

    public void Cut()
    {
        _cut = true;
        lock (_lock)
        {
            foreach (var client in _open)
                client.Dispose();
            _open.Clear();
        }
    }

    public void Heal() => _cut = false;

    async Task AcceptAsync()
    {
        while (!_stop.IsCancellationRequested)
        {
            TcpClient inbound;
            try
            {
                inbound = await _listener.AcceptTcpClientAsync(_stop.Token);
            }
            catch (Exception) when (_stop.IsCancellationRequested)
            {
                return;
            }
            if (_cut)
            {
                inbound.Dispose();
                continue;
            }
            var outbound = new TcpClient();
            try
            {
                await outbound.ConnectAsync(_target, _stop.Token);
            }
            catch (SocketException)
            {
                inbound.Dispose();
                outbound.Dispose();
                continue;
            }
            lock (_lock)
            {
                _open.Add(inbound);
                _open.Add(outbound);
            }
            _ = PumpAsync(inbound, outbound);
            _ = PumpAsync(outbound, inbound);
        }
    }

    async Task PumpAsync(TcpClient from, TcpClient to)
    {
        try
        {
            await from.GetStream().CopyToAsync(to.GetStream(), _stop.Token);
        }
        catch (Exception)
        {
            // cut, closed or stopped
        }
        from.Dispose();
        to.Dispose();
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        _listener.Stop();
        Cut();
        try
        {
            await _accepting;
        }
        catch (Exception)
        {
        }
        _stop.Dispose();
    }
}
