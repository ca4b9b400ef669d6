using System.Runtime.InteropServices;

namespace RunnerService.Processes;

/// <summary>
/// Waits for the exit of the workers started by <see cref="NativeSpawn"/> and reaps them. .NET's own SIGCHLD handling
/// reaps only children that <see cref="System.Diagnostics.Process"/> started, so these would stay zombies. One thread
/// waits on a pidfd per child (pidfd_open, Linux 5.3) in one epoll set: a child's exit costs one wake-up and a waitpid,
/// and nothing at all while it runs.
/// </summary>
static unsafe partial class ChildReaper
{
    // Watched children by pidfd, and the pidfd of each by pid; parked children (paused, watched by nobody) by pid.
    // One lock over all three: a pidfd number closed by one path may be reused by the next pidfd_open at once.
    static readonly Dictionary<int, (int Pid, TaskCompletionSource<int> Exit)> Children = [];
    static readonly Dictionary<int, int> PidFds = [];
    static readonly Dictionary<int, TaskCompletionSource<int>> ParkedChildren = [];
    static readonly Lock Gate = new();
    static readonly int Epoll = Setup();

    /// <summary>True when this kernel has pidfds and epoll, so children can be watched here.</summary>
    public static bool Works => Epoll >= 0;

    static int Setup()
    {
        if (!OperatingSystem.IsLinux() || RuntimeInformation.ProcessArchitecture is not (Architecture.X64 or Architecture.Arm64))
            return -1;
        try
        {
            var self = PidfdOpen(Environment.ProcessId);
            if (self < 0)
                return -1;
            Close(self);
            var epoll = EpollCreate1(EPOLL_CLOEXEC);
            if (epoll < 0)
                return -1;
            new Thread(() => Loop(epoll)) { IsBackground = true, Name = "worker-reaper" }.Start();
            return epoll;
        }
        catch (Exception ex) when (ex is EntryPointNotFoundException or DllNotFoundException)
        {
            return -1;
        }
    }

    /// <summary>
    /// Watches <paramref name="pid"/>, a child of this process not reaped yet (so its pid cannot have been reused).
    /// The task completes with its exit status once it has exited and is reaped: 128+N for death by signal N, as
    /// <see cref="System.Diagnostics.Process.ExitCode"/> reports it.
    /// </summary>
    public static Task<int> Watch(int pid)
    {
        var exit = new TaskCompletionSource<int>(TaskCreationOptions.RunContinuationsAsynchronously);
        lock (Gate)
            Add(pid, exit);
        return exit.Task;
    }

    static void Add(int pid, TaskCompletionSource<int> exit)
    {
        var pidfd = PidfdOpen(pid);
        if (pidfd < 0)
            throw new System.ComponentModel.Win32Exception(Marshal.GetLastPInvokeError(), $"pidfd_open({pid}) failed");
        Children[pidfd] = (pid, exit);
        PidFds[pid] = pidfd;
        var ev = stackalloc byte[16];
        WriteEvent(ev, EPOLLIN, pidfd);
        if (EpollCtl(Epoll, EPOLL_CTL_ADD, pidfd, ev) != 0)
        {
            var errno = Marshal.GetLastPInvokeError();
            Children.Remove(pidfd);
            PidFds.Remove(pid);
            Close(pidfd);
            throw new System.ComponentModel.Win32Exception(errno, $"epoll_ctl for child {pid} failed");
        }
    }

    /// <summary>
    /// Stops watching a paused child and closes its pidfd, so a paused worker holds no descriptor here. Its exit, if it
    /// dies meanwhile, is seen at <see cref="Unpark"/>: an unreaped child's pid cannot be reused, and a pidfd opened on
    /// one that has exited is readable at once.
    /// </summary>
    public static void Park(int pid)
    {
        lock (Gate)
        {
            if (!PidFds.Remove(pid, out var pidfd) || !Children.Remove(pidfd, out var child))
                return; // exited and reaped already, or parked
            EpollCtl(Epoll, EPOLL_CTL_DEL, pidfd, null);
            Close(pidfd);
            ParkedChildren[pid] = child.Exit;
        }
    }

    /// <summary>Watches a parked child again (before it is resumed or signalled). Does nothing for one that is watched.</summary>
    public static void Unpark(int pid)
    {
        lock (Gate)
        {
            if (!ParkedChildren.Remove(pid, out var exit))
                return;
            try
            {
                Add(pid, exit);
            }
            catch (System.ComponentModel.Win32Exception)
            {
                // No descriptor to spare: wait for the exit the blocking way, off this thread (it is our child, unreaped).
                _ = Task.Run(() => exit.TrySetResult(Reap(pid, wait: true)));
            }
        }
    }

    /// <summary>SIGKILL to a child that cannot be watched, and waits for it: no worker runs unwatched.</summary>
    public static void KillAndReap(int pid)
    {
        Signals.Send(pid, Signals.SIGKILL);
        Reap(pid, wait: true);
    }

    static void Loop(int epoll)
    {
        const int Max = 64;
        var stride = EventSize;
        var events = (byte*)NativeMemory.Alloc((nuint)(Max * stride));
        while (true)
        {
            var ready = EpollWait(epoll, events, Max, -1);
            if (ready < 0)
            {
                // EINTR: again at once; anything else (not expected) must not turn into a busy loop.
                if (Marshal.GetLastPInvokeError() != EINTR)
                    Thread.Sleep(100);
                continue;
            }
            for (var i = 0; i < ready; i++)
            {
                var pidfd = (int)*(ulong*)(events + i * stride + DataOffset);
                (int Pid, TaskCompletionSource<int> Exit) child;
                lock (Gate)
                {
                    if (!Children.Remove(pidfd, out child))
                        continue; // parked meanwhile: seen again at Unpark
                    PidFds.Remove(child.Pid);
                    EpollCtl(epoll, EPOLL_CTL_DEL, pidfd, null);
                    Close(pidfd);
                }
                // The pidfd is readable: the child has exited, so waitpid answers at once. WNOHANG all the same: if
                // someone else reaped it, a blocking wait could wait on the pid reused by another process.
                child.Exit.TrySetResult(Reap(child.Pid, wait: false));
            }
        }
    }

    static int Reap(int pid, bool wait)
    {
        int status;
        int got;
        do
            got = WaitPid(pid, &status, wait ? 0 : WNOHANG);
        while (got < 0 && Marshal.GetLastPInvokeError() == EINTR);
        if (got != pid)
            return 255; // reaped by someone else (a SIGCHLD set to SIG_IGN by whoever started the service): status lost
        var signal = status & 0x7f;
        return signal == 0 ? (status >> 8) & 0xff : 128 + signal;
    }

    // struct epoll_event is packed on x86-64 (12 bytes, data at 4) and naturally aligned elsewhere (16, data at 8).
    static int EventSize => RuntimeInformation.ProcessArchitecture == Architecture.X64 ? 12 : 16;
    static int DataOffset => RuntimeInformation.ProcessArchitecture == Architecture.X64 ? 4 : 8;

    static void WriteEvent(byte* ev, uint events, int fd)
    {
        *(uint*)ev = events;
        *(ulong*)(ev + DataOffset) = (ulong)fd;
    }

    const int EPOLL_CLOEXEC = 0x80000;
    const int EPOLL_CTL_ADD = 1;
    const int EPOLL_CTL_DEL = 2;
    const uint EPOLLIN = 1;
    const int EINTR = 4;
    const int WNOHANG = 1;
    const long SYS_pidfd_open = 434; // the same number on every architecture

    static int PidfdOpen(int pid) => (int)Syscall(SYS_pidfd_open, pid, 0);

    [LibraryImport("libc", EntryPoint = "syscall", SetLastError = true)]
    private static partial long Syscall(long number, long arg1, long arg2);

    [LibraryImport("libc", EntryPoint = "epoll_create1", SetLastError = true)]
    private static partial int EpollCreate1(int flags);

    [LibraryImport("libc", EntryPoint = "epoll_ctl", SetLastError = true)]
    private static partial int EpollCtl(int epfd, int op, int fd, byte* ev);

    [LibraryImport("libc", EntryPoint = "epoll_wait", SetLastError = true)]
    private static partial int EpollWait(int epfd, byte* events, int maxEvents, int timeout);

    [LibraryImport("libc", EntryPoint = "waitpid", SetLastError = true)]
    private static partial int WaitPid(int pid, int* status, int options);

    [LibraryImport("libc", EntryPoint = "close")]
    private static partial int Close(int fd);
}
