using System.Runtime.InteropServices;

namespace RunnerService.Processes;

/// <summary>POSIX signals for pause/resume; <see cref="System.Diagnostics.Process"/> cannot send SIGSTOP/SIGCONT.</summary>
static partial class Signals
{
    public const int SIGKILL = 9;
    public const int SIGTERM = 15;
    public const int SIGCONT = 18;
    public const int SIGSTOP = 19;

    [LibraryImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static partial int SysKill(int pid, int signal);

    /// <summary>Sends <paramref name="signal"/>; false when the process no longer exists.</summary>
    public static bool Send(int pid, int signal) => SysKill(pid, signal) == 0;

    /// <summary>Sends <paramref name="signal"/> to every process of group <paramref name="pgid"/>; false when the group is empty.</summary>
    public static bool SendToGroup(int pgid, int signal) => pgid > 0 && SysKill(-pgid, signal) == 0;

    /// <summary>
    /// Polls /proc until every thread of the process shows as stopped (T): the process state is its main thread's,
    /// and another thread (a reader of stdin) may still be on its way to the stop. False when that did not happen
    /// within <paramref name="patience"/>, or the process is gone.
    /// </summary>
    public static bool WaitUntilStopped(int pid, TimeSpan patience)
    {
        var deadline = Environment.TickCount64 + (long)patience.TotalMilliseconds;
        while (true)
        {
            try
            {
                var stopped = true;
                foreach (var task in Directory.EnumerateDirectories($"/proc/{pid}/task"))
                {
                    var stat = File.ReadAllText(Path.Combine(task, "stat"));
                    var state = stat[(stat.LastIndexOf(')') + 2)..][0];
                    if (state is 'Z' or 'X')
                        return false;
                    if (state is not ('T' or 't'))
                    {
                        stopped = false;
                        break;
                    }
                }
                if (stopped)
                    return true;
            }
            catch (IOException)
            {
                return false;
            }
            if (Environment.TickCount64 > deadline)
                return false;
            Thread.Yield();
        }
    }

    public static string Name(int signal) => signal switch
    {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        5 => "SIGTRAP",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        10 => "SIGUSR1",
        11 => "SIGSEGV",
        12 => "SIGUSR2",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        24 => "SIGXCPU",
        25 => "SIGXFSZ",
        31 => "SIGSYS",
        _ => $"signal {signal}",
    };
}
