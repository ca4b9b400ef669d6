namespace RunnerService.IntegrationTests.Infrastructure;

/// <summary>A span as the OpenTelemetry console exporter printed it (Activity.* lines, tags as "key: value").</summary>
public sealed record ConsoleSpan(string TraceId, string SpanId, string? ParentSpanId, string Source, string Name, IReadOnlyDictionary<string, string> Fields)
{
    /// <summary>Reads every span block from a runner's output; lines of other writers in between are skipped.</summary>
    public static IReadOnlyList<ConsoleSpan> Parse(string output)
    {
        var spans = new List<ConsoleSpan>();
        Dictionary<string, string>? fields = null;
        foreach (var raw in output.Split('\n'))
        {
            var line = raw.Trim();
            var colon = line.IndexOf(':');
            if (colon <= 0)
                continue;
            var key = line[..colon].Trim();
            var value = line[(colon + 1)..].Trim();
            if (key == "Activity.TraceId")
            {
                Flush();
                fields = new Dictionary<string, string>(StringComparer.Ordinal);
            }
            if (fields is not null && key.Length < 80 && !key.Contains(' '))
                fields.TryAdd(key, value);
            if (key == "Resource associated with Activity")
                Flush();
        }
        Flush();
        return spans;

        void Flush()
        {
            if (fields is not null && fields.TryGetValue("Activity.SpanId", out var spanId))
                spans.Add(new ConsoleSpan(fields["Activity.TraceId"], spanId, fields.GetValueOrDefault("Activity.ParentSpanId"),
                    fields.GetValueOrDefault("Activity.ActivitySourceName") ?? fields.GetValueOrDefault("Name") ?? "", fields.GetValueOrDefault("Activity.DisplayName") ?? "", fields));
            fields = null;
        }
    }
}
