using System.Diagnostics;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;

namespace RunnerService.Worker;

/// <summary>
/// The worker's own span, a child of the runner's run span (W3C traceparent from the invocation message), exported by
/// the worker itself as OTLP/HTTP JSON when <c>OTEL_EXPORTER_OTLP_TRACES_ENDPOINT</c> or
/// <c>OTEL_EXPORTER_OTLP_ENDPOINT</c> (an OTLP/HTTP endpoint, port 4318 on a collector) is set. Hand-written JSON keeps
/// it free of the OpenTelemetry SDK, cheap to start and Native-AOT safe; without an endpoint it costs nothing.
/// </summary>
sealed class WorkerTracing
{
    readonly string _endpoint;
    readonly string _traceId;
    readonly string _parentSpanId;
    readonly string _spanId;
    readonly long _startNanos;
    readonly long _startTicks;

    WorkerTracing(string endpoint, string traceId, string parentSpanId)
    {
        _endpoint = endpoint;
        _traceId = traceId;
        _parentSpanId = parentSpanId;
        _spanId = Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(8));
        _startNanos = UnixNanos();
        _startTicks = Stopwatch.GetTimestamp();
    }

    /// <summary>Starts the span, or returns null when tracing is off or the traceparent is not W3C.</summary>
    public static WorkerTracing? Start(string? traceParent)
    {
        var endpoint = Environment.GetEnvironmentVariable("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
        if (string.IsNullOrWhiteSpace(endpoint))
        {
            var baseEndpoint = Environment.GetEnvironmentVariable("OTEL_EXPORTER_OTLP_ENDPOINT");
            if (string.IsNullOrWhiteSpace(baseEndpoint))
                return null;
            endpoint = baseEndpoint.TrimEnd('/') + "/v1/traces";
        }
        // 00-<32 hex trace id>-<16 hex parent span id>-<flags>
        if (traceParent is not { Length: 55 } || traceParent[2] != '-' || traceParent[35] != '-' || traceParent[52] != '-')
            return null;
        return new WorkerTracing(endpoint, traceParent[3..35], traceParent[36..52]);
    }

    /// <summary>Ends the span and sends it (best effort, bounded: tracing never fails or stalls a task).</summary>
    public void End(string taskName, Guid invocationId, string? errorType)
    {
        var endNanos = _startNanos + (long)(Stopwatch.GetElapsedTime(_startTicks).Ticks * 100);
        try
        {
            using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(2) };
            using var content = new ByteArrayContent(Payload(taskName, invocationId, errorType, endNanos));
            content.Headers.ContentType = new System.Net.Http.Headers.MediaTypeHeaderValue("application/json");
            using var response = http.PostAsync(_endpoint, content).GetAwaiter().GetResult();
        }
        catch (Exception ex) when (ex is HttpRequestException or TaskCanceledException or InvalidOperationException)
        {
            Console.Error.WriteLine($"trace export to {_endpoint} failed: {ex.Message}");
        }
    }

    byte[] Payload(string taskName, Guid invocationId, string? errorType, long endNanos)
    {
        using var buffer = new MemoryStream();
        using (var json = new Utf8JsonWriter(buffer))
        {
            json.WriteStartObject();
            json.WriteStartArray("resourceSpans");
            json.WriteStartObject();
            json.WriteStartObject("resource");
            json.WriteStartArray("attributes");
            Attribute(json, "service.name", Environment.GetEnvironmentVariable("OTEL_SERVICE_NAME") is { Length: > 0 } name ? name + "-worker" : "runner-worker");
            Attribute(json, "process.pid", Environment.ProcessId.ToString(CultureInfo.InvariantCulture));
            json.WriteEndArray();
            json.WriteEndObject();
            json.WriteStartArray("scopeSpans");
            json.WriteStartObject();
            json.WriteStartObject("scope");
            json.WriteString("name", "RunnerService.Worker");
            json.WriteEndObject();
            json.WriteStartArray("spans");
            json.WriteStartObject();
            json.WriteString("traceId", _traceId);
            json.WriteString("spanId", _spanId);
            json.WriteString("parentSpanId", _parentSpanId);
            json.WriteString("name", $"task {taskName}");
            json.WriteNumber("kind", 1); // SPAN_KIND_INTERNAL
            json.WriteString("startTimeUnixNano", _startNanos.ToString(CultureInfo.InvariantCulture));
            json.WriteString("endTimeUnixNano", endNanos.ToString(CultureInfo.InvariantCulture));
            json.WriteStartArray("attributes");
            Attribute(json, "runner.invocation.id", invocationId.ToString());
            Attribute(json, "runner.task", taskName);
            if (errorType is not null)
                Attribute(json, "error.type", errorType);
            json.WriteEndArray();
            json.WriteStartObject("status");
            json.WriteNumber("code", errorType is null ? 1 : 2); // OK / ERROR
            json.WriteEndObject();
            json.WriteEndObject();
            json.WriteEndArray();
            json.WriteEndObject();
            json.WriteEndArray();
            json.WriteEndObject();
            json.WriteEndArray();
            json.WriteEndObject();
        }
        return buffer.ToArray();
    }

    static void Attribute(Utf8JsonWriter json, string key, string value)
    {
        json.WriteStartObject();
        json.WriteString("key", key);
        json.WriteStartObject("value");
        json.WriteString("stringValue", value);
        json.WriteEndObject();
        json.WriteEndObject();
    }

    static long UnixNanos() => (DateTime.UtcNow.Ticks - DateTime.UnixEpoch.Ticks) * 100;
}
