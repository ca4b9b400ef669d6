using System.Diagnostics.Metrics;
using System.Globalization;
using System.Text;

namespace RunnerService.Telemetry;

/// <summary>
/// Aggregates the "RunnerService" meter in process with a <see cref="MeterListener"/> and renders it in the Prometheus
/// text format, with the names the OpenTelemetry Collector's Prometheus exporter gives them (see docs/telemetry.md).
/// It backs the loopback <c>/metrics</c> endpoint: a scrape target without a collector, and what the tests read.
/// </summary>
sealed class PrometheusTextMetrics : IDisposable
{
    readonly MeterListener _listener = new();
    readonly Lock _lock = new();
    readonly List<Instrument> _instruments = [];
    // Never evicted (a counter must not restart): label values are bounded where they are tagged (TaskLabels).
    readonly Dictionary<(Instrument Instrument, string Labels), Series> _series = [];

    public PrometheusTextMetrics()
    {
        _listener.InstrumentPublished = (instrument, listener) =>
        {
            if (instrument.Meter.Name != RunnerMetrics.MeterName)
                return;
            lock (_lock)
                _instruments.Add(instrument);
            listener.EnableMeasurementEvents(instrument);
        };
        _listener.SetMeasurementEventCallback<long>((i, v, tags, _) => Record(i, v, tags));
        _listener.SetMeasurementEventCallback<int>((i, v, tags, _) => Record(i, v, tags));
        _listener.SetMeasurementEventCallback<double>((i, v, tags, _) => Record(i, v, tags));
        _listener.Start();
    }

    void Record(Instrument instrument, double value, ReadOnlySpan<KeyValuePair<string, object?>> tags)
    {
        var labels = Labels(tags);
        lock (_lock)
        {
            if (!_series.TryGetValue((instrument, labels), out var series))
                _series[(instrument, labels)] = series = new Series(IsHistogram(instrument) ? new long[RunnerMetrics.SecondsBuckets.Length + 1] : null);
            if (series.Buckets is { } buckets)
            {
                var index = Array.FindIndex(RunnerMetrics.SecondsBuckets, bound => value <= bound);
                buckets[index < 0 ? buckets.Length - 1 : index]++;
                series.Count++;
                series.Sum += value;
            }
            else if (IsGauge(instrument))
                series.Sum = value;
            else
                series.Sum += value;
        }
    }

    /// <summary>The current values in the Prometheus text exposition format 0.0.4.</summary>
    public string Render()
    {
        lock (_lock)
        {
            // Gauges show only what their callbacks report now.
            foreach (var key in _series.Keys.Where(k => IsGauge(k.Instrument)).ToArray())
                _series.Remove(key);
        }
        _listener.RecordObservableInstruments();
        var text = new StringBuilder();
        lock (_lock)
        {
            foreach (var instrument in _instruments.OrderBy(i => i.Name, StringComparer.Ordinal))
            {
                var name = PrometheusName(instrument);
                var type = IsHistogram(instrument) ? "histogram" : IsGauge(instrument) ? "gauge" : "counter";
                text.Append("# HELP ").Append(name).Append(' ').Append(instrument.Description).Append('\n');
                text.Append("# TYPE ").Append(name).Append(' ').Append(type).Append('\n');
                foreach (var ((_, labels), series) in _series.Where(s => s.Key.Instrument == instrument).OrderBy(s => s.Key.Labels, StringComparer.Ordinal))
                {
                    if (series.Buckets is { } buckets)
                    {
                        long cumulative = 0;
                        for (var b = 0; b < buckets.Length; b++)
                        {
                            cumulative += buckets[b];
                            var le = b < RunnerMetrics.SecondsBuckets.Length ? Number(RunnerMetrics.SecondsBuckets[b]) : "+Inf";
                            text.Append(name).Append("_bucket{").Append(labels).Append(labels.Length > 0 ? "," : "").Append("le=\"").Append(le).Append("\"} ")
                                .Append(cumulative.ToString(CultureInfo.InvariantCulture)).Append('\n');
                        }
                        text.Append(name).Append("_sum").Append(Braces(labels)).Append(' ').Append(Number(series.Sum)).Append('\n');
                        text.Append(name).Append("_count").Append(Braces(labels)).Append(' ').Append(series.Count.ToString(CultureInfo.InvariantCulture)).Append('\n');
                    }
                    else
                    {
                        text.Append(name).Append(Braces(labels)).Append(' ').Append(Number(series.Sum)).Append('\n');
                    }
                }
            }
        }
        return text.ToString();
    }

    /// <summary>
    /// The name the Collector's Prometheus exporter uses: dots to underscores, the unit as a suffix ("s" → _seconds,
    /// annotations in braces dropped), and _total on monotonic counters.
    /// </summary>
    public static string PrometheusName(Instrument instrument)
    {
        var name = instrument.Name.Replace('.', '_');
        var unit = instrument.Unit switch
        {
            "s" => "seconds",
            "ms" => "milliseconds",
            "By" => "bytes",
            _ => null,
        };
        if (unit is not null && !name.EndsWith("_" + unit, StringComparison.Ordinal))
            name += "_" + unit;
        if (!IsHistogram(instrument) && !IsGauge(instrument))
            name += "_total";
        return name;
    }

    static bool IsHistogram(Instrument instrument) => instrument is Histogram<double> or Histogram<long> or Histogram<int>;

    static bool IsGauge(Instrument instrument) =>
        instrument is ObservableGauge<int> or ObservableGauge<long> or ObservableGauge<double> or Gauge<int> or Gauge<long> or Gauge<double>
            or UpDownCounter<int> or UpDownCounter<long> or ObservableUpDownCounter<int> or ObservableUpDownCounter<long>;

    static string Labels(ReadOnlySpan<KeyValuePair<string, object?>> tags)
    {
        if (tags.IsEmpty)
            return "";
        var pairs = new List<string>(tags.Length);
        foreach (var (key, value) in tags)
        {
            var escaped = Convert.ToString(value, CultureInfo.InvariantCulture)?.Replace("\\", "\\\\", StringComparison.Ordinal)
                .Replace("\"", "\\\"", StringComparison.Ordinal).Replace("\n", "\\n", StringComparison.Ordinal) ?? "";
            pairs.Add($"{key.Replace('.', '_')}=\"{escaped}\"");
        }
        pairs.Sort(StringComparer.Ordinal);
        return string.Join(',', pairs);
    }

    static string Braces(string labels) => labels.Length > 0 ? "{" + labels + "}" : "";

    static string Number(double value) => value.ToString("R", CultureInfo.InvariantCulture);

    public void Dispose() => _listener.Dispose();

    sealed class Series(long[]? buckets)
    {
        public long[]? Buckets { get; } = buckets;
        public long Count { get; set; }
        public double Sum { get; set; }
    }
}
