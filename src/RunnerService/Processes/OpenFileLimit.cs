using System.Runtime.InteropServices;

namespace RunnerService.Processes;

/// <summary>
/// Every worker with open pipes (running or idle; a paused one has its ends closed) holds three pipe ends in the
/// service, so their number is bounded by the open-file limit. At start the soft limit is raised to the hard limit.
/// </summary>
static partial class OpenFileLimit
{
    const int RLIMIT_NOFILE = 7;

    [StructLayout(LayoutKind.Sequential)]
    struct RLimit
    {
        public ulong Current;
        public ulong Max;
    }

    [LibraryImport("libc", EntryPoint = "getrlimit", SetLastError = true)]
    private static partial int GetRLimit(int resource, out RLimit limit);

    [LibraryImport("libc", EntryPoint = "setrlimit", SetLastError = true)]
    private static partial int SetRLimit(int resource, in RLimit limit);

    /// <summary>Descriptors this process holds open right now (0 when /proc cannot tell).</summary>
    public static int OpenNow()
    {
        try
        {
            return Directory.GetFileSystemEntries("/proc/self/fd").Length;
        }
        catch (IOException)
        {
            return 0;
        }
    }

    /// <summary>Raises the soft limit to the hard one; returns the limit in force (0 when unknown).</summary>
    public static ulong RaiseToHardLimit()
    {
        if (!OperatingSystem.IsLinux() || GetRLimit(RLIMIT_NOFILE, out var limit) != 0)
            return 0;
        if (limit.Current < limit.Max)
        {
            var raised = limit with { Current = limit.Max };
            if (SetRLimit(RLIMIT_NOFILE, raised) == 0)
                return raised.Current;
        }
        return limit.Current;
    }
}
