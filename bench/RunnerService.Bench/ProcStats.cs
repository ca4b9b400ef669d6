using System.Globalization;
using System.Runtime.InteropServices;

namespace RunnerService.Bench;

/// <summary>Reads /proc: CPU time, memory (smaps_rollup, VmHWM), machine CPU, CPU model.</summary>
static partial class ProcStats
{
    static readonly double TickMs = 1000.0 / Sysconf(2 /* _SC_CLK_TCK */);

    [LibraryImport("libc", EntryPoint = "sysconf")]
    private static partial long Sysconf(int name);

    [LibraryImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static partial int Kill(int pid, int signal);

    public const int SIGKILL = 9;
    public const int SIGTERM = 15;

    public static bool Signal(int pid, int signal) => Kill(pid, signal) == 0;

    public static bool Alive(int pid)
    {
        try
        {
            var stat = File.ReadAllText($"/proc/{pid}/stat");
            var state = stat[(stat.LastIndexOf(')') + 2)..].Split(' ')[0];
            return state != "Z" && state != "X";
        }
        catch (IOException)
        {
            return false;
        }
        catch (UnauthorizedAccessException)
        {
            return false;
        }
    }

    /// <summary>CPU milliseconds of a process: its own (user+system) and that of its reaped children.</summary>
    public readonly record struct ProcessCpu(double SelfMs, double ChildrenMs)
    {
        public static ProcessCpu operator -(ProcessCpu a, ProcessCpu b) => new(a.SelfMs - b.SelfMs, a.ChildrenMs - b.ChildrenMs);
    }

    public static ProcessCpu Cpu(int pid)
    {
        try
        {
            var stat = File.ReadAllText($"/proc/{pid}/stat");
            var f = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
            // fields after the command: state(0) ... utime(11) stime(12) cutime(13) cstime(14)
            double P(int i) => double.Parse(f[i], CultureInfo.InvariantCulture) * TickMs;
            return new ProcessCpu(P(11) + P(12), P(13) + P(14));
        }
        catch (IOException)
        {
            return default;
        }
    }

    /// <summary>Whole-machine CPU: busy and total milliseconds summed over all cores, and steal.</summary>
    public readonly record struct MachineCpu(double BusyMs, double TotalMs, double StealMs)
    {
        public static MachineCpu operator -(MachineCpu a, MachineCpu b) => new(a.BusyMs - b.BusyMs, a.TotalMs - b.TotalMs, a.StealMs - b.StealMs);
    }

    public static MachineCpu Machine()
    {
        var line = File.ReadLines("/proc/stat").First(l => l.StartsWith("cpu ", StringComparison.Ordinal));
        var v = line.Split(' ', StringSplitOptions.RemoveEmptyEntries).Skip(1).Select(x => double.Parse(x, CultureInfo.InvariantCulture) * TickMs).ToArray();
        // user nice system idle iowait irq softirq steal guest guest_nice
        var idle = v[3] + v[4];
        var total = v.Take(8).Sum();
        return new MachineCpu(total - idle, total, v[7]);
    }

    /// <summary>Private memory in KiB from /proc/PID/smaps_rollup (Private_Clean, Private_Dirty), plus Rss and Pss.</summary>
    public sealed record Memory(long PrivateCleanKb, long PrivateDirtyKb, long RssKb, long PssKb)
    {
        public long PrivateKb => PrivateCleanKb + PrivateDirtyKb;
    }

    public static Memory? SmapsRollup(int pid)
    {
        try
        {
            long clean = 0, dirty = 0, rss = 0, pss = 0;
            foreach (var line in File.ReadLines($"/proc/{pid}/smaps_rollup"))
            {
                if (TryField(line, "Private_Clean:", out var x)) clean = x;
                else if (TryField(line, "Private_Dirty:", out x)) dirty = x;
                else if (TryField(line, "Rss:", out x)) rss = x;
                else if (TryField(line, "Pss:", out x)) pss = x;
            }
            return new Memory(clean, dirty, rss, pss);
        }
        catch (IOException)
        {
            return null;
        }
    }

    /// <summary>A field of /proc/PID/status in KiB (VmHWM, VmRSS...), or -1.</summary>
    public static long StatusKb(int pid, string field)
    {
        try
        {
            foreach (var line in File.ReadLines($"/proc/{pid}/status"))
            {
                if (TryField(line, field + ":", out var v))
                    return v;
            }
        }
        catch (IOException)
        {
        }
        return -1;
    }

    static bool TryField(string line, string name, out long kb)
    {
        kb = 0;
        if (!line.StartsWith(name, StringComparison.Ordinal))
            return false;
        var rest = line[name.Length..].Trim();
        var space = rest.IndexOf(' ');
        return long.TryParse(space < 0 ? rest : rest[..space], NumberStyles.Integer, CultureInfo.InvariantCulture, out kb);
    }

    public static string CpuModel()
    {
        try
        {
            var line = File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name", StringComparison.Ordinal));
            return line is null ? "unknown" : line[(line.IndexOf(':') + 1)..].Trim();
        }
        catch (IOException)
        {
            return "unknown";
        }
    }

    public static string LoadAverage()
    {
        try
        {
            return string.Join(' ', File.ReadAllText("/proc/loadavg").Split(' ').Take(3));
        }
        catch (IOException)
        {
            return "?";
        }
    }

    public static int? ReadPidFile(string? path)
    {
        if (string.IsNullOrEmpty(path) || !File.Exists(path))
            return null;
        var digits = new string([.. File.ReadAllText(path).Where(char.IsAsciiDigit)]);
        return int.TryParse(digits, NumberStyles.Integer, CultureInfo.InvariantCulture, out var pid) ? pid : null;
    }
}
