using System.IO.Pipes;
using System.Runtime.InteropServices;
using System.Text;

namespace RunnerService.Processes;

/// <summary>
/// Starts one command over and over with posix_spawn (glibc: clone(CLONE_VM|CLONE_VFORK) + exec), each child in a
/// new session of its own (POSIX_SPAWN_SETSID), its stdin, stdout and stderr on fresh pipes. Its argv and environment
/// are laid out once in native memory, so a start allocates nearly nothing here: it costs this process a fraction of
/// what <see cref="System.Diagnostics.Process.Start()"/> does (bench/RESULTS.md), and the child execs the worker at
/// once instead of going through <c>setsid</c>. Children are reaped by <see cref="ChildReaper"/>. Not for another user:
/// posix_spawn cannot change credentials (<see cref="WorkerPool"/> uses Process then). Its native memory (a few hundred
/// bytes) lives as long as the process: a spawn may be queued on the spawner thread until the very end.
/// </summary>
sealed unsafe partial class NativeSpawn
{
    readonly byte* _file;
    readonly byte** _argv;
    readonly byte** _envp;
    readonly byte* _attr;
    readonly string _command;

    /// <param name="command">Run as execvp would: a name without '/' is looked up in the service's PATH.</param>
    public NativeSpawn(string command, IReadOnlyList<string> arguments, IEnumerable<KeyValuePair<string, string>> environment)
    {
        _command = command;
        _file = Utf8(command);
        _argv = Array([command, .. arguments]);
        _envp = Array([.. environment.Select(e => $"{e.Key}={e.Value}")]);
        _attr = Block(AttrSize);
        Check(PosixSpawnattrInit(_attr), "posix_spawnattr_init");
        // The child starts with no blocked signal and every signal at its default: the runtime ignores SIGPIPE, and an
        // ignored signal would stay ignored across exec.
        var signals = Block(SigsetSize);
        SigEmptySet(signals);
        Check(PosixSpawnattrSetsigmask(_attr, signals), "posix_spawnattr_setsigmask");
        SigFillSet(signals);
        Check(PosixSpawnattrSetsigdefault(_attr, signals), "posix_spawnattr_setsigdefault");
        Check(PosixSpawnattrSetflags(_attr, POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF), "posix_spawnattr_setflags");
    }

    /// <summary>True where this way of starting works here (Linux with pidfds, glibc's posix_spawn with SETSID).</summary>
    public static bool Supported => ChildReaper.Works;

    /// <summary>
    /// Starts the command. Call it from the one long-lived spawner thread: the worker's parent-death signal
    /// (PR_SET_PDEATHSIG) follows the thread that created it. Throws <see cref="System.ComponentModel.Win32Exception"/>
    /// when the command cannot be started.
    /// </summary>
    public SpawnedWorker Start()
    {
        int* stdin = stackalloc int[2], stdout = stackalloc int[2], stderr = stackalloc int[2];
        stdin[0] = stdin[1] = stdout[0] = stdout[1] = stderr[0] = stderr[1] = -1;
        var actions = stackalloc byte[FileActionsSize];
        var actionsReady = false;
        try
        {
            // O_CLOEXEC on every end: only the child's dup2 copies on 0, 1 and 2 survive its exec, so no worker holds
            // another's pipes.
            if (Pipe2(stdin, O_CLOEXEC) != 0 || Pipe2(stdout, O_CLOEXEC) != 0 || Pipe2(stderr, O_CLOEXEC) != 0)
                throw new System.ComponentModel.Win32Exception(Marshal.GetLastPInvokeError(), "cannot create the worker's pipes");
            Check(PosixSpawnFileActionsInit(actions), "posix_spawn_file_actions_init");
            actionsReady = true;
            Check(PosixSpawnFileActionsAdddup2(actions, stdin[0], 0), "posix_spawn_file_actions_adddup2");
            Check(PosixSpawnFileActionsAdddup2(actions, stdout[1], 1), "posix_spawn_file_actions_adddup2");
            Check(PosixSpawnFileActionsAdddup2(actions, stderr[1], 2), "posix_spawn_file_actions_adddup2");
            int pid;
            var error = PosixSpawnp(&pid, _file, actions, _attr, _argv, _envp);
            if (error != 0)
                throw new System.ComponentModel.Win32Exception(error, $"cannot start '{_command}': {Marshal.GetPInvokeErrorMessage(error)}");
            Close(stdin[0]);
            Close(stdout[1]);
            Close(stderr[1]);
            stdin[0] = stdout[1] = stderr[1] = -1;
            Task<int> exit;
            try
            {
                exit = ChildReaper.Watch(pid);
            }
            catch
            {
                ChildReaper.KillAndReap(pid); // it would be a worker nobody watches, and a zombie
                throw;
            }
            var started = new SpawnedWorker(pid,
                WorkerProcess.PipeStream(stdin[1], PipeDirection.Out),
                WorkerProcess.PipeStream(stdout[0], PipeDirection.In),
                WorkerProcess.PipeStream(stderr[0], PipeDirection.In),
                exit,
                Owner: null);
            stdin[1] = stdout[0] = stderr[0] = -1;
            return started;
        }
        finally
        {
            if (actionsReady)
                PosixSpawnFileActionsDestroy(actions);
            for (var i = 0; i < 2; i++)
            {
                if (stdin[i] >= 0)
                    Close(stdin[i]);
                if (stdout[i] >= 0)
                    Close(stdout[i]);
                if (stderr[i] >= 0)
                    Close(stderr[i]);
            }
        }
    }

    static byte* Block(int size)
    {
        return (byte*)NativeMemory.AllocZeroed((nuint)size);
    }

    static byte* Utf8(string text)
    {
        var bytes = Encoding.UTF8.GetBytes(text);
        var block = Block(bytes.Length + 1);
        bytes.CopyTo(new Span<byte>(block, bytes.Length));
        return block;
    }

    static byte** Array(IReadOnlyList<string> items)
    {
        var array = (byte**)Block((items.Count + 1) * sizeof(nint));
        for (var i = 0; i < items.Count; i++)
            array[i] = Utf8(items[i]);
        return array;
    }

    static void Check(int error, string what)
    {
        if (error != 0)
            throw new System.ComponentModel.Win32Exception(error, $"{what} failed");
    }

    // glibc's sizes on 64-bit Linux are 336, 80 and 128 bytes; room to spare.
    const int AttrSize = 512;
    const int FileActionsSize = 128;
    const int SigsetSize = 256;

    const int O_CLOEXEC = 0x80000;
    const short POSIX_SPAWN_SETSIGDEF = 0x04;
    const short POSIX_SPAWN_SETSIGMASK = 0x08;
    const short POSIX_SPAWN_SETSID = 0x80;

    [LibraryImport("libc", EntryPoint = "posix_spawnp")]
    private static partial int PosixSpawnp(int* pid, byte* file, byte* fileActions, byte* attr, byte** argv, byte** envp);

    [LibraryImport("libc", EntryPoint = "posix_spawnattr_init")]
    private static partial int PosixSpawnattrInit(byte* attr);

    [LibraryImport("libc", EntryPoint = "posix_spawnattr_setflags")]
    private static partial int PosixSpawnattrSetflags(byte* attr, short flags);

    [LibraryImport("libc", EntryPoint = "posix_spawnattr_setsigmask")]
    private static partial int PosixSpawnattrSetsigmask(byte* attr, byte* sigset);

    [LibraryImport("libc", EntryPoint = "posix_spawnattr_setsigdefault")]
    private static partial int PosixSpawnattrSetsigdefault(byte* attr, byte* sigset);

    [LibraryImport("libc", EntryPoint = "posix_spawn_file_actions_init")]
    private static partial int PosixSpawnFileActionsInit(byte* actions);

    [LibraryImport("libc", EntryPoint = "posix_spawn_file_actions_destroy")]
    private static partial int PosixSpawnFileActionsDestroy(byte* actions);

    [LibraryImport("libc", EntryPoint = "posix_spawn_file_actions_adddup2")]
    private static partial int PosixSpawnFileActionsAdddup2(byte* actions, int fd, int newFd);

    [LibraryImport("libc", EntryPoint = "sigemptyset")]
    private static partial int SigEmptySet(byte* set);

    [LibraryImport("libc", EntryPoint = "sigfillset")]
    private static partial int SigFillSet(byte* set);

    [LibraryImport("libc", EntryPoint = "pipe2", SetLastError = true)]
    private static partial int Pipe2(int* fds, int flags);

    [LibraryImport("libc", EntryPoint = "close")]
    private static partial int Close(int fd);
}
