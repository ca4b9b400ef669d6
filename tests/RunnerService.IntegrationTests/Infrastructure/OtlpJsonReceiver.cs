using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using System.Text.Json;

namespace RunnerService.IntegrationTests.Infrastructure;

/// <summary>A minimal OTLP/HTTP JSON endpoint (POST /v1/traces) that keeps the spans workers export.</summary>
public sealed class OtlpJsonReceiver : IDisposable
{
    readonly HttpListener _listener = new();
    readonly Task _loop;

    public OtlpJsonReceiver()
    {
        using (var probe = new TcpListener(IPAddress.Loopback, 0))
        {
            probe.Start();
            Endpoint = new Uri($"http://127.0.0.1:{((IPEndPoint)probe.LocalEndpoint).Port}/");
        }
        _listener.Prefixes.Add(Endpoint.ToString());
        _listener.Start();
        _loop = Task.Run(LoopAsync);
    }

    public Uri Endpoint { get; }

    public ConcurrentQueue<ReceivedSpan> Spans { get; } = new();

    async Task LoopAsync()
    {
        while (_listener.IsListening)
        {
            HttpListenerContext context;
            try
            {
                context = await _listener.GetContextAsync();
            }
            catch (Exception ex) when (ex is HttpListenerException or ObjectDisposedException)
            {
                return;
            }
            using (var doc = await JsonDocument.ParseAsync(context.Request.InputStream))
            {
                foreach (var resource in doc.RootElement.GetProperty("resourceSpans").EnumerateArray())
                foreach (var scope in resource.GetProperty("scopeSpans").EnumerateArray())
                foreach (var span in scope.GetProperty("spans").EnumerateArray())
                {
                    var attributes = span.GetProperty("attributes").EnumerateArray()
                        .ToDictionary(a => a.GetProperty("key").GetString()!, a => a.GetProperty("value").GetProperty("stringValue").GetString()!);
                    var pid = resource.GetProperty("resource").GetProperty("attributes").EnumerateArray()
                        .First(a => a.GetProperty("key").GetString() == "process.pid").GetProperty("value").GetProperty("stringValue").GetString()!;
                    Spans.Enqueue(new ReceivedSpan(span.GetProperty("traceId").GetString()!, span.GetProperty("spanId").GetString()!,
                        span.GetProperty("parentSpanId").GetString()!, span.GetProperty("name").GetString()!, int.Parse(pid), attributes,
                        context.Request.Url!.AbsolutePath));
                }
            }
            context.Response.StatusCode = 200;
            context.Response.Close();
        }
    }

    public void Dispose()
    {
        _listener.Close();
        try
        {
            _loop.Wait(TimeSpan.FromSeconds(5));
        }
        catch (AggregateException)
        {
        }
    }
}

public sealed record ReceivedSpan(string TraceId, string SpanId, string ParentSpanId, string Name, int ProcessId, IReadOnlyDictionary<string, string> Attributes, string Path);
