using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace RunnerService.Bench;

/// <summary>Collects the figures, prints the table, writes the JSON.</summary>
sealed class Report(BenchOptions options)
{
    readonly List<Figure> _figures = [];
    readonly List<string> _errors = [];
    readonly string _loadBefore = ProcStats.LoadAverage();
    readonly DateTimeOffset _startedAt = DateTimeOffset.UtcNow;

    public Figure Add(Figure figure)
    {
        _figures.Add(figure);
        return figure;
    }

    public void Error(string scenario, Exception ex) => _errors.Add($"{scenario}: {ex.GetType().Name}: {ex.Message}");

    /// <summary>A measured figure, or a derived one (<see cref="DerivedSpecs"/>) whose inputs ran.</summary>
    Figure? Find(string? id) => id is null ? null
        : _figures.FirstOrDefault(f => f.Id == id && f.Runs.Count > 0) ?? Derived().FirstOrDefault(f => f.Id == id);

    static string F(double v) => double.IsNaN(v) ? "—" : Math.Abs(v) >= 100 ? v.ToString("F0", CultureInfo.InvariantCulture)
        : Math.Abs(v) >= 10 ? v.ToString("F1", CultureInfo.InvariantCulture) : v.ToString("F2", CultureInfo.InvariantCulture);

    string? Ratio(Figure f) => Find(f.BaselineId) is { } b && b.Median != 0 && f.Runs.Count > 0 ? $"×{F(f.Median / b.Median)} of {b.Id}" : null;

    /// <summary>
    /// Figures computed from others of the same run (a floor made of two measured parts): run i is
    /// <see cref="DerivedSpec.Combine"/> of run i of each input. Present only when every input ran, with as many runs.
    /// </summary>
    static readonly DerivedSpec[] DerivedSpecs =
    [
        new("rtt+start.p50", "broker round trip p50 + worker start floor p50 (run i = rtt.p50 run i + start.p50 run i)", "ms",
            ["rtt.p50", "start.p50"], v => v[0] + v[1]),
    ];

    sealed record DerivedSpec(string Id, string Name, string Unit, string[] Inputs, Func<double[], double> Combine);

    IEnumerable<Figure> Derived()
    {
        foreach (var spec in DerivedSpecs)
        {
            var inputs = spec.Inputs.Select(id => _figures.FirstOrDefault(f => f.Id == id && f.Runs.Count > 0)).ToArray();
            if (inputs.Any(f => f is null) || inputs.Select(f => f!.Runs.Count).Distinct().Count() != 1)
                continue;
            var figure = new Figure { Id = spec.Id, Name = spec.Name, Unit = spec.Unit, Note = "derived: " + string.Join(" + ", spec.Inputs) };
            for (var run = 0; run < inputs[0]!.Runs.Count; run++)
                figure.Runs.Add(spec.Combine([.. inputs.Select(f => f!.Runs[run])]));
            yield return figure;
        }
    }

    IEnumerable<Figure> AllFigures() => _figures.Concat(Derived());

    /// <summary>
    /// The headline (issue 14, item 4): the Targets table in its order, then rows without a target. A row is
    /// Numerator ÷ Denominator, two figures of the same run; a row without a Denominator is the numerator figure itself
    /// (already a ratio to an ideal, or an absolute figure) under the figure's own name. Rows whose inputs did not run are left out.
    /// </summary>
    static readonly RatioSpec[] RatioSpecs =
    [
        new("fresh/floor.c", "(a) fresh process each ÷ AOT worker start floor, 2 parallel (C parent)", "a", "floor.c", "≥ 0.75", r => r >= 0.75),
        new("fresh/celery.fresh", "(a) fresh process each ÷ Celery acks_late + max-tasks-per-child=1", "a", "celery.fresh", "≥ 30", r => r >= 30),
        new("reuse/celery.acks_late", "a.reuse ÷ Celery acks_late + prefetch 1", "a.reuse", "celery.acks_late", "≥ 1.5", r => r >= 1.5),
        new("reuse/celery.defaults", "a.reuse ÷ Celery defaults", "a.reuse", "celery.defaults", "≥ 1.0", r => r >= 1.0),
        new("b.p50/(rtt+start.p50)", "(b) publish→completed p50, one at a time ÷ (broker round trip p50 + worker start floor p50)", "b.p50", "rtt+start.p50",
            "≤ 2.0", r => r <= 2.0),
        new("demo", null, "demo", null, "≤ 1.2", r => r <= 1.2),
        new("d", null, "d", null, "≤ 1.10", r => r <= 1.10),
        new("a.service_cpu", null, "a.service_cpu", null, "≤ 1.0", r => r <= 1.0),
        new("fresh/floor", "(a) fresh process each ÷ AOT worker start floor, 2 parallel (.NET parent)", "a", "floor", null, null),
        new("b.p50/celery.acks_late.p50", "(b) p50, fresh process ÷ Celery acks_late one-at-a-time p50 (lower is better)", "b.p50", "celery.acks_late.p50", null, null),
    ];

    sealed record RatioSpec(string Id, string? Name, string Numerator, string? Denominator, string? Target, Func<double, bool>? Meets);

    sealed record RatioValue(RatioSpec Spec, Figure Numerator, Figure? Denominator)
    {
        public double Median => Denominator is null ? Numerator.Median : Numerator.Median / Denominator.Median;

        /// <summary>The least and the most favourable pairing of the runs' extremes (the runs are not paired).</summary>
        public double Low => Denominator is null ? Numerator.Min : Numerator.Min / Denominator.Max;
        public double High => Denominator is null ? Numerator.Max : Numerator.Max / Denominator.Min;
        public bool? Met => Spec.Meets?.Invoke(Median);

        /// <summary>The spec's name, or (a row without a divisor) the figure's own, which carries its sizes.</summary>
        public string Name => Spec.Name ?? Numerator.Name;

        /// <summary>The "peer / floor" column: the denominator, or the ideal a figure is already divided by.</summary>
        public string Against => Denominator is { } d ? $"{F(d.Median)} {d.Unit}"
            : Numerator.Details.TryGetValue("ideal_seconds", out var ideal) && ideal is double s ? $"ideal {F(s)} s" : "";
    }

    IEnumerable<RatioValue> Ratios() =>
        RatioSpecs.Select(s => (s, n: Find(s.Numerator), d: Find(s.Denominator)))
            .Where(x => x.n is not null && (x.s.Denominator is null || (x.d is not null && x.d.Median != 0)))
            .Select(x => new RatioValue(x.s, x.n!, x.d));

    public string Table()
    {
        var sb = new StringBuilder();
        sb.AppendLine($"Machine: {Environment.ProcessorCount} cores, {ProcStats.CpuModel()}; loadavg before {_loadBefore}, after {ProcStats.LoadAverage()}");
        sb.AppendLine();
        var ratios = Ratios().ToList();
        if (ratios.Count > 0)
        {
            sb.AppendLine("Issue 14's targets (ratio of the medians, range = worst–best pairing of the runs' min/max; a row with no");
            sb.AppendLine("divisor is the figure itself, range = its min–max):");
            sb.AppendLine();
            sb.AppendLine("| ratio | what | value | range | ours | peer / floor | target | met |");
            sb.AppendLine("|---|---|---|---|---|---|---|---|");
            foreach (var r in ratios)
            {
                var met = r.Met switch { true => "yes", false => "**no**", null => "" };
                sb.AppendLine(CultureInfo.InvariantCulture,
                    $"| {r.Spec.Id} | {r.Name} | **{F(r.Median)}** | {F(r.Low)}–{F(r.High)} | {F(r.Numerator.Median)} {r.Numerator.Unit} | {r.Against} | {r.Spec.Target} | {met} |");
            }
            sb.AppendLine();
        }
        sb.AppendLine("| id | figure | median | min–max | unit | runs | target | met | vs naive baseline |");
        sb.AppendLine("|---|---|---|---|---|---|---|---|---|");
        foreach (var f in AllFigures())
        {
            var met = f.Met switch { true => "yes", false => "**no**", null => "" };
            sb.AppendLine(CultureInfo.InvariantCulture,
                $"| {f.Id} | {f.Name} | {F(f.Median)} | {F(f.Min)}–{F(f.Max)} | {f.Unit} | {f.Runs.Count} | {f.Target} | {met} | {Ratio(f)} |");
        }
        foreach (var e in _errors)
            sb.AppendLine(CultureInfo.InvariantCulture, $"\nERROR {e}");
        return sb.ToString();
    }

    public async Task WriteJsonAsync(string path)
    {
        var figures = new JsonArray();
        foreach (var f in AllFigures())
        {
            var baseline = Find(f.BaselineId);
            figures.Add(new JsonObject
            {
                ["id"] = f.Id,
                ["name"] = f.Name,
                ["unit"] = f.Unit,
                ["median"] = Num(f.Median),
                ["min"] = Num(f.Min),
                ["max"] = Num(f.Max),
                ["runs"] = new JsonArray([.. f.Runs.Select(r => (JsonNode?)Num(r))]),
                ["target"] = f.Target,
                ["met"] = f.Met,
                ["baseline"] = baseline?.Id,
                ["ratio_to_baseline"] = baseline is null || baseline.Median == 0 ? null : Num(f.Median / baseline.Median),
                ["note"] = f.Note,
                ["details"] = JsonSerializer.SerializeToNode(f.Details),
            });
        }
        var root = new JsonObject
        {
            ["started_at"] = _startedAt.ToString("O", CultureInfo.InvariantCulture),
            ["finished_at"] = DateTimeOffset.UtcNow.ToString("O", CultureInfo.InvariantCulture),
            ["command"] = Environment.GetEnvironmentVariable("BENCH_COMMAND") ?? "dotnet RunnerService.Bench.dll " + string.Join(' ', Environment.GetCommandLineArgs().Skip(1)),
            ["machine"] = new JsonObject
            {
                ["cores"] = Environment.ProcessorCount,
                ["cpu_model"] = ProcStats.CpuModel(),
                ["os"] = RuntimeInformation.OSDescription,
                ["dotnet"] = RuntimeInformation.FrameworkDescription,
                ["memory_total_mb"] = MemTotalMb(),
                ["loadavg_before"] = _loadBefore,
                ["loadavg_after"] = ProcStats.LoadAverage(),
            },
            ["git"] = Git("rev-parse HEAD") + (string.IsNullOrWhiteSpace(Git("status --porcelain --untracked-files=no -- . :!bench/results")) ? "" : " (with uncommitted changes)"),
            ["options"] = JsonSerializer.SerializeToNode(new Dictionary<string, object>
            {
                ["runs"] = options.Runs, ["slots"] = options.Slots, ["throughput_n"] = options.ThroughputN, ["baseline_n"] = options.BaselineThroughputN,
                ["jit_worker_n"] = options.JitWorkerThroughputN, ["latency_n"] = options.LatencyN, ["rtt_n"] = options.RoundTripN, ["baseline_latency_n"] = options.BaselineLatencyN,
                ["resume_n"] = options.ResumeN, ["cpu_n"] = options.CpuN, ["cpu_ms"] = options.CpuMs, ["spawn_n"] = options.SpawnN,
                ["jit_spawn_n"] = options.JitSpawnN, ["memory_n"] = options.MemoryN, ["queued"] = options.Queued, ["paused"] = options.Paused,
                ["peak_runs"] = options.PeakRuns, ["peak_slots"] = options.PeakSlots,
                ["with_celery"] = options.WithCelery, ["celery_n"] = options.CeleryThroughputN, ["celery_fresh_n"] = options.CeleryFreshThroughputN,
                ["celery_warmup"] = options.CeleryWarmup, ["celery_fresh_warmup"] = options.CeleryFreshWarmup, ["celery_latency_n"] = options.CeleryLatencyN,
                ["celery_backend"] = options.CeleryBackend,
                ["aot_worker"] = options.AotWorkerPath, ["service_dll"] = options.ServiceDllPath, ["jit_worker_dll"] = options.JitWorkerDllPath,
            }),
            ["ratios"] = new JsonArray([.. Ratios().Select(r => (JsonNode?)new JsonObject
            {
                ["id"] = r.Spec.Id,
                ["name"] = r.Name,
                ["numerator"] = r.Spec.Numerator,
                ["denominator"] = r.Spec.Denominator,
                ["value"] = Num(r.Median),
                ["low"] = Num(r.Low),
                ["high"] = Num(r.High),
                ["target"] = r.Spec.Target,
                ["met"] = r.Met,
            })]),
            ["figures"] = figures,
            ["errors"] = new JsonArray([.. _errors.Select(e => (JsonNode?)e)]),
        };
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
        await File.WriteAllTextAsync(path, root.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
    }

    static JsonNode? Num(double v) => double.IsNaN(v) || double.IsInfinity(v) ? null : JsonValue.Create(Math.Round(v, 4));

    static long MemTotalMb()
    {
        var line = File.ReadLines("/proc/meminfo").First(l => l.StartsWith("MemTotal:", StringComparison.Ordinal));
        return long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture) / 1024;
    }

    string Git(string args)
    {
        try
        {
            var start = new ProcessStartInfo("git", args) { RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = options.RepoRoot };
            using var p = Process.Start(start)!;
            var output = p.StandardOutput.ReadToEnd().Trim();
            p.WaitForExit();
            return output;
        }
        catch (System.ComponentModel.Win32Exception)
        {
            return "";
        }
    }
}
