namespace RunnerService.Bench;

static class Stats
{
    public static double Median(IReadOnlyList<double> values) => Percentile(values, 50);

    /// <summary>Nearest-rank percentile (p in 0..100) of unsorted values.</summary>
    public static double Percentile(IReadOnlyList<double> values, double p)
    {
        if (values.Count == 0)
            return double.NaN;
        var sorted = values.Order().ToArray();
        if (p >= 100)
            return sorted[^1];
        // Linear interpolation between closest ranks (like numpy's default).
        var rank = p / 100 * (sorted.Length - 1);
        var lo = (int)Math.Floor(rank);
        var hi = (int)Math.Ceiling(rank);
        return sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo);
    }
}

/// <summary>One reported figure: one value per run; reported as median with min–max.</summary>
sealed class Figure
{
    public required string Id { get; init; }
    public required string Name { get; init; }
    public required string Unit { get; init; }
    public List<double> Runs { get; } = [];

    /// <summary>Human-readable target, e.g. "≥ 500".</summary>
    public string? Target { get; init; }

    /// <summary>Met when the median satisfies this (null: no target).</summary>
    public Func<double, bool>? Meets { get; init; }

    /// <summary>Id of the baseline figure this one is compared with (ratio = this / baseline).</summary>
    public string? BaselineId { get; init; }

    /// <summary>Free-form details recorded with the figure (breakdowns, per-run extras).</summary>
    public Dictionary<string, object?> Details { get; } = [];

    public string? Note { get; set; }

    public double Median => Stats.Median(Runs);
    public double Min => Runs.Count == 0 ? double.NaN : Runs.Min();
    public double Max => Runs.Count == 0 ? double.NaN : Runs.Max();
    public bool? Met => Meets is null || Runs.Count == 0 ? null : Meets(Median);
}
