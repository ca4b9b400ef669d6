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

    [LibraryImport("libc", EntryPoint = "open", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static partial int Open(string path, int flags, int mode);

    [LibraryImport("libc", EntryPoint = "write", SetLastError = true)]
    private static unsafe partial nint Write(int fd, byte* buffer, nint count);

    [LibraryImport("libc", EntryPoint = "close")]
    private static partial int Close(int fd);

    const int O_WRONLY = 0x1, O_CREAT = 0x40, O_APPEND = 0x400, O_CLOEXEC = 0x80000;

    /// <summary>
    /// Appends <paramref name="text"/> with one <c>write</c> on an <c>O_APPEND</c> descriptor, so lines from many
    /// processes never overwrite or tear each other (.NET's <c>FileMode.Append</c> seeks to the end instead).
    /// </summary>
    public static unsafe void AppendAtomically(string path, string text)
    {
        var bytes = System.Text.Encoding.UTF8.GetBytes(text);
        var fd = Open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0x1A4 /* 0644 */);
        if (fd < 0)
            throw new IOException($"cannot open {path} for appending (errno {Marshal.GetLastPInvokeError()})");
        try
        {
            fixed (byte* buffer = bytes)
            {
                if (Write(fd, buffer, bytes.Length) != bytes.Length)
                    throw new IOException($"short or failed write to {path} (errno {Marshal.GetLastPInvokeError()})");
            }
        }
        finally
        {
            Close(fd);
        }
    }

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
