using System.Globalization;

namespace RunnerService.Bench.Chaos;

/// <summary>
/// The lines the built-in <c>marker</c> task appends (<c>start|tick|end id attempt unix-ms pid</c>), read from every
/// replica's marker file, as one run interval per (invocation, attempt, process): from its first <c>start</c> to its
/// last line. A killed run's last <c>tick</c> tells when it stopped (at most 100 ms before).
/// </summary>
static class MarkerLog
{
    public sealed record Run(Guid Id, int Attempt, int Pid, long FirstMs, long LastMs, bool Ended, string File)
    {
        public string Describe() =>
            $"attempt {Attempt} pid {Pid} [{Format(FirstMs)} .. {Format(LastMs)}]{(Ended ? " ended" : " no end")} ({Path.GetFileName(File)})";
    }

    public static string Format(long unixMs) => DateTimeOffset.FromUnixTimeMilliseconds(unixMs).ToString("HH:mm:ss.fff", CultureInfo.InvariantCulture);

    /// <summary>Runs by invocation id; <paramref name="malformed"/> gets lines that are not marker lines (a torn write).</summary>
    public static Dictionary<Guid, List<Run>> Read(IEnumerable<string> files, List<string> malformed, out int lines)
    {
        var runs = new Dictionary<(Guid Id, int Attempt, int Pid), Run>();
        lines = 0;
        foreach (var file in files)
        {
            if (!File.Exists(file))
                continue;
            foreach (var line in File.ReadLines(file))
            {
                if (line.Length == 0)
                    continue;
                lines++;
                var f = line.Split(' ');
                if (f.Length != 5 || f[0] is not ("start" or "tick" or "end") || !Guid.TryParse(f[1], out var id)
                    || !int.TryParse(f[2], CultureInfo.InvariantCulture, out var attempt) || !long.TryParse(f[3], CultureInfo.InvariantCulture, out var ms)
                    || !int.TryParse(f[4], CultureInfo.InvariantCulture, out var pid))
                {
                    malformed.Add($"{Path.GetFileName(file)}: '{line}'");
                    continue;
                }
                var key = (id, attempt, pid);
                runs[key] = runs.TryGetValue(key, out var r)
                    ? r with { FirstMs = f[0] == "start" ? Math.Min(r.FirstMs, ms) : r.FirstMs, LastMs = Math.Max(r.LastMs, ms), Ended = r.Ended || f[0] == "end" }
                    : new Run(id, attempt, pid, ms, ms, f[0] == "end", file);
            }
        }
        return runs.Values.GroupBy(r => r.Id).ToDictionary(g => g.Key, g => g.OrderBy(r => r.FirstMs).ToList());
    }
}
