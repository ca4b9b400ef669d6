using System.Collections.Concurrent;
using System.Globalization;

namespace RunnerService.Bench;

/// <summary>
/// Worker processes from /proc. pid_max may be small (32768 here), so a pid is only "the same process" when its
/// start time (boot time + /proc/PID/stat starttime) is within a second of the Started event's StartedAt.
/// </summary>
sealed class ProcWatch(string workerPath)
{
    static readonly double TicksPerSecond = 100;   // USER_HZ
    readonly ConcurrentDictionary<int, Entry> _entries = new();
    readonly ConcurrentDictionary<int, byte> _reported = new();

    sealed class Entry
    {
        public DateTimeOffset StartedAt;
        public DateTimeOffset? LastSeenAlive;
        public bool Dead;
    }

    public readonly record struct Worker(int Pid, int PPid, string State);

    public void Track(int pid, DateTimeOffset startedAt)
    {
        if (pid <= 0)
            return;
        _reported[pid] = 0;
        var e = new Entry { StartedAt = startedAt };
        _entries[pid] = e;
        if (IsAliveSame(pid, startedAt))
            e.LastSeenAlive = DateTimeOffset.UtcNow;
        else
            e.Dead = true;
    }

    public bool WasReported(int pid) => _reported.ContainsKey(pid);

    public DateTimeOffset? LastSeenAlive(int pid, DateTimeOffset startedAt) =>
        _entries.TryGetValue(pid, out var e) && e.StartedAt == startedAt ? e.LastSeenAlive : null;

    public async Task PollAsync(CancellationToken token)
    {
        while (!token.IsCancellationRequested)
        {
            foreach (var (pid, e) in _entries)
            {
                if (e.Dead)
                {
                    if (e.LastSeenAlive is null || DateTimeOffset.UtcNow - e.LastSeenAlive > TimeSpan.FromMinutes(2))
                        _entries.TryRemove(pid, out _);
                    continue;
                }
                if (IsAliveSame(pid, e.StartedAt))
                    e.LastSeenAlive = DateTimeOffset.UtcNow;
                else
                    e.Dead = true;
            }
            try
            {
                await Task.Delay(20, token);
            }
            catch (OperationCanceledException)
            {
            }
        }
    }

    /// <summary>Alive (not zombie), running our worker executable, and started within 1 s of <paramref name="startedAt"/>.</summary>
    public bool IsAliveSame(int pid, DateTimeOffset startedAt)
    {
        var info = Read(pid);
        if (info is null || info.Value.State is "Z" or "X" || info.Value.Exe != workerPath)
            return false;
        return (info.Value.Start - startedAt).Duration() < TimeSpan.FromSeconds(1);
    }

    public static string? State(int pid)
    {
        try
        {
            var stat = File.ReadAllText($"/proc/{pid}/stat");
            return stat[(stat.LastIndexOf(')') + 2)..].Split(' ')[0];
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    /// <summary>Every live (non-zombie) process whose command is the worker executable.</summary>
    public List<Worker> ScanWorkers()
    {
        var list = new List<Worker>();
        foreach (var dir in Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(dir), out var pid))
                continue;
            var info = Read(pid);
            if (info is { } i && i.Exe == workerPath && i.State is not ("Z" or "X"))
                list.Add(new Worker(pid, i.PPid, i.State));
        }
        return list;
    }

    readonly record struct Info(string State, int PPid, DateTimeOffset Start, string Exe);

    static Info? Read(int pid)
    {
        try
        {
            var stat = File.ReadAllText($"/proc/{pid}/stat");
            var f = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
            // after the command: state(0) ppid(1) ... starttime(19)
            var start = BootTime() + TimeSpan.FromSeconds(long.Parse(f[19], CultureInfo.InvariantCulture) / TicksPerSecond);
            var cmdline = File.ReadAllText($"/proc/{pid}/cmdline");
            var exe = cmdline.Split('\0')[0];
            return new Info(f[0], int.Parse(f[1], CultureInfo.InvariantCulture), start, exe);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or FormatException or IndexOutOfRangeException)
        {
            return null;
        }
    }

    static DateTimeOffset? _boot;

    /// <summary>Wall-clock boot time from /proc/uptime (10 ms precision, unlike btime's whole seconds).</summary>
    static DateTimeOffset BootTime()
    {
        if (_boot is { } b)
            return b;
        var uptime = double.Parse(File.ReadAllText("/proc/uptime").Split(' ')[0], CultureInfo.InvariantCulture);
        var boot = DateTimeOffset.UtcNow - TimeSpan.FromSeconds(uptime);
        _boot = boot;
        return boot;
    }
}
