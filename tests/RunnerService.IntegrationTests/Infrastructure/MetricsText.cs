using System.Globalization;
using System.Text.RegularExpressions;

namespace RunnerService.IntegrationTests.Infrastructure;

/// <summary>One scrape of a runner's <c>/metrics</c> (Prometheus text format), read back by family and labels.</summary>
public sealed partial class MetricsText
{
    readonly Dictionary<string, double> _samples = new(StringComparer.Ordinal);
    readonly Dictionary<string, string> _types = new(StringComparer.Ordinal);

    MetricsText(string text)
    {
        Text = text;
        foreach (var line in text.Split('\n', StringSplitOptions.RemoveEmptyEntries))
        {
            if (line.StartsWith("# TYPE ", StringComparison.Ordinal))
            {
                var parts = line.Split(' ');
                _types[parts[2]] = parts[3];
                continue;
            }
            if (line.StartsWith('#'))
                continue;
            var space = line.LastIndexOf(' ');
            _samples[line[..space]] = double.Parse(line[(space + 1)..], CultureInfo.InvariantCulture);
        }
    }

    public string Text { get; }

    /// <summary>Metric families with their type (counter, gauge, histogram).</summary>
    public IReadOnlyDictionary<string, string> Families => _types;

    public static async Task<MetricsText> ScrapeAsync(Uri runnerBase)
    {
        using var http = new HttpClient { BaseAddress = runnerBase, Timeout = TimeSpan.FromSeconds(10) };
        return new MetricsText(await http.GetStringAsync("metrics"));
    }

    /// <summary>The sample's value, 0 when the series does not exist (yet).</summary>
    public double Value(string name, params (string Key, string Value)[] labels)
    {
        var sorted = labels.OrderBy(l => l.Key, StringComparer.Ordinal).Select(l => $"{l.Key}=\"{l.Value}\"");
        var key = labels.Length == 0 ? name : $"{name}{{{string.Join(',', sorted)}}}";
        return _samples.GetValueOrDefault(key);
    }

    /// <summary>Sum over every series of <paramref name="name"/> whose labels contain all of <paramref name="labels"/>.</summary>
    public double Sum(string name, params (string Key, string Value)[] labels) =>
        _samples.Where(s => SeriesName().Match(s.Key).Value == name && labels.All(l => s.Key.Contains($"{l.Key}=\"{l.Value}\"", StringComparison.Ordinal)))
            .Sum(s => s.Value);

    [GeneratedRegex(@"^[a-zA-Z_:][a-zA-Z0-9_:]*")]
    private static partial Regex SeriesName();
}
