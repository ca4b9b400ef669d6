using System.Runtime.InteropServices;

namespace RunnerService.Worker;

static partial class NativeMethods
{
    const int PR_SET_PDEATHSIG = 1;
    const int SIGKILL = 9;

    [LibraryImport("libc", SetLastError = true)]
    private static partial int prctl(int option, nint arg2, nint arg3, nint arg4, nint arg5);

    [LibraryImport("libc")]
    private static partial int getppid();

    [LibraryImport("libc", EntryPoint = "signal")]
    private static partial nint SetSignalHandler(int signal, nint handler);

    [LibraryImport("libc", EntryPoint = "raise")]
    private static partial int Raise(int signal);

    /// <summary>Dies by <paramref name="signal"/> with its default action, past the runtime's own handlers (for fault tests).</summary>
    public static void DieBySignal(int signal)
    {
        SetSignalHandler(signal, 0); // SIG_DFL
        Raise(signal);
    }

    /// <summary>
    /// Asks the kernel to SIGKILL this process when the runner dies; SIGKILL reaches stopped (paused) processes
    /// too, so no worker outlives its service. Returns false if the runner is already gone.
    /// </summary>
    public static bool DieWithParent(int expectedParentPid)
    {
        if (!OperatingSystem.IsLinux())
            return true;
        prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
        // The parent may have died between fork and prctl; then we were re-parented already.
        return expectedParentPid <= 0 || getppid() == expectedParentPid;
    }
}
