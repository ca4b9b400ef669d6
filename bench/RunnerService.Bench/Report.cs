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

    Figure? Find(string? id) => id is null ? null : _figures.FirstOrDefault(f => f.Id == id && f.Runs.Count > 0);

    static string F(double v) => double.IsNaN(v) ? "—" : Math.Abs(v) >= 100 ? v.ToString("F0", CultureInfo.InvariantCulture)
        : Math.Abs(v) >= 10 ? v.ToString("F1", CultureInfo.InvariantCulture) : v.ToString("F2", CultureInfo.InvariantCulture);

    string? Ratio(Figure f) => Find(f.BaselineId) is { } b && b.Median != 0 && f.Runs.Count > 0 ? $"×{F(f.Median / b.Median)} of {b.Id}" : null;

    public string Table()
    {
        var sb = new StringBuilder();
        sb.AppendLine($"Machine: {Environment.ProcessorCount} cores, {ProcStats.CpuModel()}; loadavg before {_loadBefore}, after {ProcStats.LoadAverage()}");
        sb.AppendLine();
        sb.AppendLine("| id | figure | median | min–max | unit | runs | target | met | vs naive baseline |");
        sb.AppendLine("|---|---|---|---|---|---|---|---|---|");
        foreach (var f in _figures)
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
        foreach (var f in _figures)
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
            ["git"] = Git("rev-parse HEAD") + (string.IsNullOrWhiteSpace(Git("status --porcelain --untracked-files=no")) ? "" : " (with uncommitted changes)"),
            ["options"] = JsonSerializer.SerializeToNode(new Dictionary<string, object>
            {
                ["runs"] = options.Runs, ["slots"] = options.Slots, ["throughput_n"] = options.ThroughputN, ["baseline_n"] = options.BaselineThroughputN,
                ["jit_worker_n"] = options.JitWorkerThroughputN, ["latency_n"] = options.LatencyN, ["baseline_latency_n"] = options.BaselineLatencyN,
                ["resume_n"] = options.ResumeN, ["cpu_n"] = options.CpuN, ["cpu_ms"] = options.CpuMs, ["spawn_n"] = options.SpawnN,
                ["jit_spawn_n"] = options.JitSpawnN, ["memory_n"] = options.MemoryN, ["queued"] = options.Queued, ["paused"] = options.Paused,
                ["peak_runs"] = options.PeakRuns, ["peak_slots"] = options.PeakSlots,
                ["aot_worker"] = options.AotWorkerPath, ["service_dll"] = options.ServiceDllPath, ["jit_worker_dll"] = options.JitWorkerDllPath,
            }),
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
