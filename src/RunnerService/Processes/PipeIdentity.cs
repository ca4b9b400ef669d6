using System.IO.Pipes;
using System.Runtime.InteropServices;

namespace RunnerService.Processes;

/// <summary>
/// Which kernel pipes a worker's stdin, stdout and stderr are (their /proc link text, <c>pipe:[inode]</c>), so this
/// side's ends can be closed while the worker is paused and reopened through /proc/PID/fd when it resumes. A pipe
/// lives as long as any process holds an end of it, and the paused worker holds its own.
/// </summary>
readonly partial record struct PipeIdentity(string? Stdin, string? Stdout, string? Stderr)
{
    /// <summary>True when /proc tells which pipes these are, so the service can close and reopen its ends.</summary>
    public bool CanReopen => Stdin is not null && Stdout is not null;

    public static PipeIdentity Of(Stream stdin, Stream stdout, Stream stderr) => new(Link(stdin), Link(stdout), Link(stderr));

    static string? Link(Stream stream)
    {
        if (stream is not PipeStream pipe || !OperatingSystem.IsLinux())
            return null;
        try
        {
            var target = new FileInfo($"/proc/self/fd/{pipe.SafePipeHandle.DangerousGetHandle()}").LinkTarget;
            return target is not null && target.StartsWith("pipe:[", StringComparison.Ordinal) ? target : null;
        }
        catch (IOException)
        {
            return null;
        }
        catch (UnauthorizedAccessException)
        {
            return null;
        }
    }

    /// <summary>
    /// True when this service may open the worker's pipes through /proc (another user's process needs root's
    /// CAP_SYS_PTRACE): tried once before the first pause, so a worker is never parked without a way back.
    /// </summary>
    public bool CanReopenFrom(int pid)
    {
        var (stdin, stdout, stderr) = Reopen(pid);
        var works = stdin is not null && stdout is not null;
        stdin?.Dispose();
        stdout?.Dispose();
        stderr?.Dispose();
        return works;
    }

    /// <summary>Opens new ends of the worker's pipes from the descriptors the worker holds; null for a pipe it no longer holds.</summary>
    public (Stream? Stdin, Stream? Stdout, Stream? Stderr) Reopen(int pid)
    {
        int? stdin = null, stdout = null, stderr = null;
        try
        {
            // Its standard descriptors first: a worker that moved them (dup2) is still found by the scan.
            foreach (var fd in new[] { 0, 1, 2 }.Concat(Descriptors(pid)))
            {
                var target = LinkOf(pid, fd);
                if (target is null)
                    continue;
                if (stdin is null && target == Stdin)
                    stdin = fd;
                else if (stdout is null && target == Stdout)
                    stdout = fd;
                else if (stderr is null && target == Stderr)
                    stderr = fd;
                if (stdin is not null && stdout is not null && (stderr is not null || Stderr is null))
                    break;
            }
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }
        return (Open(pid, stdin, PipeDirection.Out), Open(pid, stdout, PipeDirection.In), Open(pid, stderr, PipeDirection.In));
    }

    static IEnumerable<int> Descriptors(int pid)
    {
        foreach (var entry in Directory.EnumerateFileSystemEntries($"/proc/{pid}/fd"))
        {
            if (int.TryParse(Path.GetFileName(entry), out var fd) && fd > 2)
                yield return fd;
        }
    }

    static string? LinkOf(int pid, int fd)
    {
        try
        {
            return new FileInfo($"/proc/{pid}/fd/{fd}").LinkTarget;
        }
        catch (IOException)
        {
            return null;
        }
    }

    static Stream? Open(int pid, int? workerFd, PipeDirection direction)
    {
        if (workerFd is not { } fd)
            return null;
        // Opening /proc/PID/fd/N of a pipe gives a new end of that same pipe, in the mode asked for.
        var flags = (direction == PipeDirection.Out ? O_WRONLY : O_RDONLY) | O_CLOEXEC | O_NONBLOCK;
        var mine = SysOpen($"/proc/{pid}/fd/{fd}", flags);
        return mine < 0 ? null : WorkerProcess.PipeStream(mine, direction);
    }

    const int O_RDONLY = 0;
    const int O_WRONLY = 1;
    const int O_NONBLOCK = 0x800;
    const int O_CLOEXEC = 0x80000;

    [LibraryImport("libc", EntryPoint = "open", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int SysOpen(string path, int flags);
}
