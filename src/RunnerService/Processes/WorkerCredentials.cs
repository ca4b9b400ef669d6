using System.Diagnostics;
using System.Runtime.InteropServices;
using RunnerService.Hosting;

namespace RunnerService.Processes;

/// <summary>
/// The unprivileged user workers run as (<c>Runner:WorkerUser</c>): a worker then can read neither the service's
/// environment (/proc/PID/environ) nor files only the service's user may read, such as the saga store.
/// </summary>
sealed partial record WorkerCredentials(string Name, uint Uid, uint Gid, string Home)
{
    /// <summary>The configured user, looked up in the user database; null when workers run as the service's user.</summary>
    public static WorkerCredentials? Resolve(RunnerOptions options)
    {
        if (string.IsNullOrWhiteSpace(options.WorkerUser))
            return null;
        var entry = GetPasswordEntry(options.WorkerUser);
        if (entry == IntPtr.Zero)
            throw new InvalidOperationException($"Runner:WorkerUser '{options.WorkerUser}' is not a user on this machine");
        var passwd = Marshal.PtrToStructure<Passwd>(entry);
        if (passwd.Uid == 0)
            throw new InvalidOperationException($"Runner:WorkerUser '{options.WorkerUser}' is root: workers must run unprivileged");
        return new WorkerCredentials(options.WorkerUser, passwd.Uid, passwd.Gid, Marshal.PtrToStringUTF8(passwd.Dir) ?? "/");
    }

    /// <summary>
    /// Checks, as that user, that the worker command is executable and its file arguments readable: a worker that
    /// cannot start would otherwise fail every invocation.
    /// </summary>
    public void CheckCanRun(string command, IEnumerable<string> arguments)
    {
        var checks = new List<string> { "test -x \"$0\" && test -r \"$0\"" };
        var files = arguments.Where(File.Exists).ToList();
        for (var i = 0; i < files.Count; i++)
            checks.Add($"test -r \"${i + 1}\"");
        var start = new ProcessStartInfo("/bin/sh") { UserName = Name, UseShellExecute = false, RedirectStandardError = true };
        start.ArgumentList.Add("-c");
        start.ArgumentList.Add(string.Join(" && ", checks));
        start.ArgumentList.Add(Resolve(command));
        foreach (var file in files)
            start.ArgumentList.Add(file);
        Process check;
        try
        {
            check = Process.Start(start)!;
        }
        catch (System.ComponentModel.Win32Exception ex)
        {
            throw new InvalidOperationException(
                $"Runner:WorkerUser '{Name}': the service cannot start processes as that user ({ex.Message}); it must run as root or with the SETUID and SETGID capabilities", ex);
        }
        using var _ = check;
        check.WaitForExit();
        if (check.ExitCode != 0)
        {
            throw new InvalidOperationException(
                $"Runner:WorkerUser '{Name}' cannot run the worker '{command}'" + (files.Count > 0 ? $" or read {string.Join(", ", files)}" : "") +
                ": the files and every folder above them must be readable and executable by that user (docs/operations.md)");
        }
    }

    static string Resolve(string command)
    {
        if (command.Contains('/', StringComparison.Ordinal))
            return Path.GetFullPath(command);
        foreach (var dir in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':', StringSplitOptions.RemoveEmptyEntries))
        {
            var candidate = Path.Combine(dir, command);
            if (File.Exists(candidate))
                return candidate;
        }
        return command;
    }

    [StructLayout(LayoutKind.Sequential)]
    struct Passwd
    {
        public IntPtr Name;
        public IntPtr Password;
        public uint Uid;
        public uint Gid;
        public IntPtr Gecos;
        public IntPtr Dir;
        public IntPtr Shell;
    }

    [LibraryImport("libc", EntryPoint = "getpwnam", StringMarshalling = StringMarshalling.Utf8)]
    private static partial IntPtr GetPasswordEntry(string name);
}
