using System.Diagnostics;
using System.Globalization;
using System.Net.Http.Headers;

namespace RunnerService.Worker;

/// <summary>
/// Sends ended worker spans (<see cref="WorkerTracing"/>) once the invocation's result or error line is written and
/// flushed, never before: a slow or unreachable collector must not hold up a result. The runner keeps the worker's
/// slot until the process exits and the worker waits for its exports before it exits (<see cref="DrainAsync"/>), so
/// each export is bounded by <see cref="Budget"/>. In reuse mode an export runs in the background while the worker
/// reads and runs its next invocation.
/// </summary>
sealed class SpanExporter
{
    /// <summary>
    /// Default budget of one export (connect, send, answer): what a collector that accepts but never answers costs per
    /// invocation in slot time. A collector is normally near (an agent or a sidecar) and answers within milliseconds;
    /// 500 ms leaves a JIT-compiled worker room, whose first request also compiles the HTTP stack (~70–150 ms, more
    /// on a busy machine). <c>OTEL_EXPORTER_OTLP_TRACES_TIMEOUT</c> or <c>OTEL_EXPORTER_OTLP_TIMEOUT</c> (milliseconds) set
    /// for the workers replaces it.
    /// </summary>
    static readonly TimeSpan DefaultBudget = TimeSpan.FromMilliseconds(500);

    /// <summary>Connect limit: a collector host that drops packets costs this, not the whole budget; a closed port fails at once.</summary>
    static readonly TimeSpan ConnectTimeout = TimeSpan.FromMilliseconds(200);

    /// <summary>What the exit waits past the last budget, so a cancelled export still gets its failure line out.</summary>
    static readonly TimeSpan ReportGrace = TimeSpan.FromMilliseconds(50);

    readonly Lazy<HttpClient> _http;
    readonly List<Task> _pending = [];
    long _lastDeadline;

    public SpanExporter()
        : this(ReadBudget())
    {
    }

    public SpanExporter(TimeSpan budget)
    {
        Budget = budget;
        // One client per process: in reuse mode later exports use the connection the first one opened.
        _http = new(() => new HttpClient(new SocketsHttpHandler { ConnectTimeout = ConnectTimeout < Budget ? ConnectTimeout : Budget })
        {
            Timeout = Timeout.InfiniteTimeSpan, // each export has its own budget token
        });
    }

    /// <summary>Longest time one export may take.</summary>
    public TimeSpan Budget { get; }

    /// <summary>Starts sending an ended span. Call it after the result is flushed; it neither blocks nor throws.</summary>
    public void Export(WorkerTracing span)
    {
        _pending.RemoveAll(t => t.IsCompleted);
        // The budget runs from now, the moment the result is out.
        var budget = new CancellationTokenSource(Budget);
        _lastDeadline = Stopwatch.GetTimestamp() + (long)(Budget.TotalSeconds * Stopwatch.Frequency);
        // Off the caller's thread: the payload and a first request (handler set-up, JIT) are CPU work that in reuse
        // mode would otherwise delay reading the next invocation.
        _pending.Add(Task.Run(() => SendAsync(span, budget)));
    }

    /// <summary>Waits for the exports still under way, at most until the last one's budget is spent: the process exits next.</summary>
    public async Task DrainAsync()
    {
        _pending.RemoveAll(t => t.IsCompleted);
        if (_pending.Count == 0)
            return;
        var left = Stopwatch.GetElapsedTime(Stopwatch.GetTimestamp(), _lastDeadline) + ReportGrace;
        try
        {
            // Each export cancels itself at its budget; this cap also covers what a token may not stop (a DNS lookup).
            await Task.WhenAll(_pending).WaitAsync(left > TimeSpan.Zero ? left : TimeSpan.Zero).ConfigureAwait(false);
        }
        catch (TimeoutException)
        {
        }
    }

    async Task SendAsync(WorkerTracing span, CancellationTokenSource budget)
    {
        try
        {
            using var content = new ByteArrayContent(span.Payload());
            content.Headers.ContentType = new MediaTypeHeaderValue("application/json");
            using var response = await _http.Value.PostAsync(span.Endpoint, content, budget.Token).ConfigureAwait(false);
            if (!response.IsSuccessStatusCode)
                Report(span, $"HTTP {(int)response.StatusCode} {response.ReasonPhrase}");
        }
        catch (OperationCanceledException) when (budget.IsCancellationRequested)
        {
            Report(span, $"no answer within {Budget.TotalMilliseconds.ToString("F0", CultureInfo.InvariantCulture)} ms");
        }
        catch (Exception ex)
        {
            // Tracing never fails a worker, whatever the endpoint looks like (refused, malformed URL, TLS error).
            Report(span, ex.Message);
        }
        finally
        {
            budget.Dispose();
        }
    }

    static void Report(WorkerTracing span, string why) =>
        Console.Error.WriteLine($"trace export to {span.Endpoint} failed (invocation {span.InvocationId}): {why}");

    static TimeSpan ReadBudget()
    {
        foreach (var name in (ReadOnlySpan<string>)["OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT"])
        {
            if (int.TryParse(Environment.GetEnvironmentVariable(name), NumberStyles.None, CultureInfo.InvariantCulture, out var ms) && ms > 0)
                return TimeSpan.FromMilliseconds(ms);
        }
        return DefaultBudget;
    }
}
