using System.Text;
using RunnerService.Processes;

namespace RunnerService.Tests;

/// <summary>
/// Workers started with posix_spawn instead of System.Diagnostics.Process: what Process gave for free must still hold
/// (exit status with 128+N for signals, reaping, no inherited descriptors or ignored signals), plus a session of their own.
/// </summary>
[Trait("Category", "Unit")]
public sealed class NativeSpawnTests : IDisposable
{
    readonly string _directory = Directory.CreateTempSubdirectory("spawn-test-").FullName;

    public void Dispose() => Directory.Delete(_directory, recursive: true);

    NativeSpawn Spawner(string script, Dictionary<string, string>? environment = null)
    {
        var path = Path.Combine(_directory, $"worker-{Guid.NewGuid():N}.sh");
        File.WriteAllText(path, "#!/bin/bash\n" + script + "\n");
        if (OperatingSystem.IsLinux())
            File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        return new NativeSpawn(path, ["one", "two words"], environment ?? new() { ["PATH"] = "/usr/bin:/bin" });
    }

    static async Task<(string Stdout, string Stderr, int Exit)> RunAsync(SpawnedWorker worker)
    {
        worker.Stdin.Dispose();
        using var stdout = new StreamReader(worker.Stdout, Encoding.UTF8);
        using var stderr = new StreamReader(worker.Stderr, Encoding.UTF8);
        var output = stdout.ReadToEndAsync();
        var errors = stderr.ReadToEndAsync();
        var exit = await worker.Exit.WaitAsync(TimeSpan.FromSeconds(10));
        return (await output, await errors, exit);
    }

    [Fact]
    public async Task Arguments_environment_and_the_three_pipes_reach_the_worker()
    {
        Assert.True(NativeSpawn.Supported, "posix_spawn with pidfds needs Linux ≥ 5.3");
        var spawner = Spawner("read -r line; echo \"got $line|$1|$2|$GREETING|${SECRET-unset}\"; echo oops >&2",
            new() { ["PATH"] = "/usr/bin:/bin", ["GREETING"] = "hello" });
        var worker = spawner.Start();
        await worker.Stdin.WriteAsync(Encoding.UTF8.GetBytes("ping\n"));
        var (stdout, stderr, exit) = await RunAsync(worker);
        Assert.Equal("got ping|one|two words|hello|unset\n", stdout);
        Assert.Equal("oops\n", stderr);
        Assert.Equal(0, exit);
    }

    [Fact]
    public async Task The_exit_status_is_the_code_or_128_plus_the_signal_and_the_worker_is_reaped()
    {
        Assert.True(NativeSpawn.Supported, "posix_spawn with pidfds needs Linux ≥ 5.3");
        var exits = Spawner("exit 3").Start();
        Assert.Equal(3, (await RunAsync(exits)).Exit);
        Assert.False(Directory.Exists($"/proc/{exits.Pid}"), "the exited worker is still there (a zombie)");

        var killed = Spawner("kill -TERM $$; sleep 5").Start();
        Assert.Equal(128 + Signals.SIGTERM, (await RunAsync(killed)).Exit);
    }

    [Fact]
    public async Task The_worker_leads_a_session_of_its_own()
    {
        Assert.True(NativeSpawn.Supported, "posix_spawn with pidfds needs Linux ≥ 5.3");
        // /proc/PID/stat after the command: state ppid pgrp session ...
        var worker = Spawner("stat=$(</proc/$$/stat); set -- ${stat##*) }; echo \"$$ $3 $4\"").Start();
        var fields = (await RunAsync(worker)).Stdout.Trim().Split(' ');
        Assert.Equal([worker.Pid.ToString(), worker.Pid.ToString(), worker.Pid.ToString()], fields);
    }

    [Fact]
    public async Task A_worker_holds_no_descriptor_of_another_worker_and_no_signal_is_ignored_or_blocked()
    {
        Assert.True(NativeSpawn.Supported, "posix_spawn with pidfds needs Linux ≥ 5.3");
        var first = Spawner("read -r line").Start();
        try
        {
            var descriptors = await RunAsync(new NativeSpawn("/bin/ls", ["-l", "/proc/self/fd/"], new Dictionary<string, string>()).Start());
            var pipes = descriptors.Stdout.Split('\n').Where(l => l.Contains("pipe:[", StringComparison.Ordinal)).ToList();
            foreach (var mine in new[] { first.Stdin, first.Stdout, first.Stderr })
                Assert.DoesNotContain(pipes, p => p.EndsWith(Link(mine), StringComparison.Ordinal));
            var status = (await RunAsync(new NativeSpawn("/bin/grep", ["-E", "^Sig(Ign|Blk)", "/proc/self/status"], new Dictionary<string, string>()).Start())).Stdout;
            Assert.Equal(0UL, Mask(status, "SigBlk"));
            // The runtime ignores SIGPIPE; a worker must not inherit that. glibc's posix_spawn leaves only its own two
            // internal signals (32, 33) ignored, and a program that uses them installs its handlers itself.
            Assert.Equal(0UL, Mask(status, "SigIgn") & ~((1UL << 31) | (1UL << 32)));
        }
        finally
        {
            Signals.Send(first.Pid, Signals.SIGKILL);
            await RunAsync(first);
        }
    }

    static ulong Mask(string status, string name) =>
        Convert.ToUInt64(status.Split('\n').Single(l => l.StartsWith(name + ":", StringComparison.Ordinal))[(name.Length + 1)..].Trim(), 16);

    static string Link(Stream pipe) =>
        new FileInfo($"/proc/self/fd/{((System.IO.Pipes.PipeStream)pipe).SafePipeHandle.DangerousGetHandle()}").LinkTarget!;

    [Fact]
    public void A_command_that_cannot_start_throws_with_its_errno()
    {
        Assert.True(NativeSpawn.Supported, "posix_spawn with pidfds needs Linux ≥ 5.3");
        var spawner = new NativeSpawn(Path.Combine(_directory, "missing"), [], new Dictionary<string, string>());
        var error = Assert.Throws<System.ComponentModel.Win32Exception>(() => spawner.Start());
        Assert.Equal(2, error.NativeErrorCode); // ENOENT
    }
}
