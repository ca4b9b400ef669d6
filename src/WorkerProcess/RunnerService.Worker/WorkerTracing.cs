using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;

namespace RunnerService.Worker;

/// <summary>
/// The worker's own span, a child of the runner's run span (W3C traceparent from the invocation message), exported by
/// the worker itself as OTLP/HTTP JSON when <c>OTEL_EXPORTER_OTLP_TRACES_ENDPOINT</c> or
/// <c>OTEL_EXPORTER_OTLP_ENDPOINT</c> (an OTLP/HTTP endpoint, port 4318 on a collector) is set. Hand-written JSON keeps
/// it free of the OpenTelemetry SDK, cheap to start and Native-AOT safe; without an endpoint it costs nothing.
/// On the task's path <see cref="Start"/> and <see cref="End"/> only read the clock: the ids, the wall-clock times and
/// the payload are made after the result is out, when <see cref="SpanExporter"/> sends the span.
/// </summary>
sealed class WorkerTracing
{
    readonly string _traceParent;
    readonly long _startTicks;
    long _endTicks;
    string _taskName = "";
    string? _errorType;

    WorkerTracing(string endpoint, string traceParent, long startTicks)
    {
        Endpoint = endpoint;
        _traceParent = traceParent;
        _startTicks = startTicks;
    }

    /// <summary>Starts the span, or returns null when tracing is off or the traceparent is not W3C.</summary>
    public static WorkerTracing? Start(string? traceParent) => Start(traceParent, ConfiguredEndpoint());

    /// <summary>Starts a span for <paramref name="endpoint"/> (the traces URL); null when there is none or the traceparent is not W3C.</summary>
    public static WorkerTracing? Start(string? traceParent, string? endpoint)
    {
        // 00-<32 hex trace id>-<16 hex parent span id>-<flags>
        if (endpoint is null || traceParent is not { Length: 55 } || traceParent[2] != '-' || traceParent[35] != '-' || traceParent[52] != '-')
            return null;
        return new WorkerTracing(endpoint, traceParent, Stopwatch.GetTimestamp());
    }

    /// <summary>The OTLP/HTTP traces URL from the environment, or null when tracing is off.</summary>
    static string? ConfiguredEndpoint()
    {
        var endpoint = Environment.GetEnvironmentVariable("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
        if (!string.IsNullOrWhiteSpace(endpoint))
            return endpoint;
        var baseEndpoint = Environment.GetEnvironmentVariable("OTEL_EXPORTER_OTLP_ENDPOINT");
        return string.IsNullOrWhiteSpace(baseEndpoint) ? null : baseEndpoint.TrimEnd('/') + "/v1/traces";
    }

    /// <summary>The OTLP/HTTP traces URL the span goes to.</summary>
    public string Endpoint { get; }

    /// <summary>The invocation the span covers (known from <see cref="End"/> on).</summary>
    public Guid InvocationId { get; private set; }

    /// <summary>Ends the span: takes the time and the outcome, nothing more (it runs just before the result is written).</summary>
    public void End(string taskName, Guid invocationId, string? errorType)
    {
        _endTicks = Stopwatch.GetTimestamp();
        _taskName = taskName;
        InvocationId = invocationId;
        _errorType = errorType;
    }

    /// <summary>The ended span as an OTLP/HTTP JSON export request.</summary>
    public byte[] Payload()
    {
        // Wall-clock times from the monotonic ticks taken on the task's path, anchored to the clock now.
        var nowNanos = UnixNanos();
        var nowTicks = Stopwatch.GetTimestamp();
        var startNanos = nowNanos - Stopwatch.GetElapsedTime(_startTicks, nowTicks).Ticks * 100;
        var endNanos = nowNanos - Stopwatch.GetElapsedTime(_endTicks, nowTicks).Ticks * 100;
        // A span id needs to be unique, not secret.
        var spanId = Random.Shared.NextInt64(1, long.MaxValue).ToString("x16", CultureInfo.InvariantCulture);
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
            json.WriteString("traceId", _traceParent.AsSpan(3, 32));
            json.WriteString("spanId", spanId);
            json.WriteString("parentSpanId", _traceParent.AsSpan(36, 16));
            json.WriteString("name", $"task {_taskName}");
            json.WriteNumber("kind", 1); // SPAN_KIND_INTERNAL
            json.WriteString("startTimeUnixNano", startNanos.ToString(CultureInfo.InvariantCulture));
            json.WriteString("endTimeUnixNano", endNanos.ToString(CultureInfo.InvariantCulture));
            json.WriteStartArray("attributes");
            Attribute(json, "runner.invocation.id", InvocationId.ToString());
            Attribute(json, "runner.task", _taskName);
            if (_errorType is not null)
                Attribute(json, "error.type", _errorType);
            json.WriteEndArray();
            json.WriteStartObject("status");
            json.WriteNumber("code", _errorType is null ? 1 : 2); // OK / ERROR
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
