using System.Diagnostics;
using RunnerService.IntegrationTests.Infrastructure;
using Xunit.Abstractions;

namespace RunnerService.IntegrationTests;

/// <summary>
/// deploy/local/rabbitmq.sh and postgres.sh as a user runs them: started on ports of one's own, then stopped (and
/// asked for their status) with nothing but the state folder. Ports of these tests alone: AMQP 5912, management 15912,
/// distribution 25912, epmd 4512, prometheus 16912; PostgreSQL 5913.
/// </summary>
[Trait("Category", "Integration")]
public sealed class LocalBrokerScriptTests(ITestOutputHelper output)
{
    static readonly string Script = Path.Combine(RepoPaths.Root, "deploy", "local", "rabbitmq.sh");
    static readonly string PostgresScript = Path.Combine(RepoPaths.Root, "deploy", "local", "postgres.sh");

    [Fact]
    public async Task Stop_and_status_given_only_the_state_folder_find_a_broker_started_on_other_ports_and_stop_its_epmd()
    {
        var dir = Directory.CreateTempSubdirectory("runner-broker-script-").FullName;
        var onlyDir = new Dictionary<string, string> { ["RUNNER_BROKER_DIR"] = dir };
        var custom = new Dictionary<string, string>(onlyDir)
        {
            ["RUNNER_BROKER_PORT"] = "5912",
            ["RUNNER_BROKER_MGMT_PORT"] = "15912",
            ["RUNNER_BROKER_DIST_PORT"] = "25912",
            ["RUNNER_BROKER_EPMD_PORT"] = "4512",
            ["RUNNER_BROKER_PROMETHEUS_PORT"] = "16912",
        };
        var pids = new List<int>();
        try
        {
            var (exit, stdout, stderr) = await RunAsync("start", custom);
            Assert.True(exit == 0, $"start failed ({exit}):\n{stderr}");
            Assert.Contains("export ConnectionStrings__RabbitMq=amqp://guest:guest@127.0.0.1:5912/", stdout, StringComparison.Ordinal);

            var launcher = ReadPid(Path.Combine(dir, "launcher.pid"));
            var beam = ReadPid(Path.Combine(dir, "rabbitmq.pid"));
            var epmd = EpmdPids(4512);
            pids.AddRange([launcher, beam, .. epmd]);
            output.WriteLine($"launcher {launcher}, beam {beam}, epmd {string.Join(",", epmd)}");
            Assert.True(ProcessSignals.IsAlive(launcher) && ProcessSignals.IsAlive(beam));
            Assert.NotEmpty(epmd);

            (exit, _, stderr) = await RunAsync("status", onlyDir);
            Assert.True(exit == 0, $"status given only the folder says not running ({exit}):\n{stderr}");
            Assert.Contains("runner-5912@localhost", stderr, StringComparison.Ordinal);
            (exit, stdout, _) = await RunAsync("env", onlyDir);
            Assert.Equal(0, exit);
            Assert.Contains("export ConnectionStrings__RabbitMq=amqp://guest:guest@127.0.0.1:5912/", stdout, StringComparison.Ordinal);
            Assert.Contains("export RABBITMQ_MANAGEMENT_URL=http://guest:guest@127.0.0.1:15912/", stdout, StringComparison.Ordinal);

            (exit, _, stderr) = await RunAsync("stop", onlyDir);
            output.WriteLine(stderr);
            Assert.True(exit == 0, $"stop failed ({exit}):\n{stderr}");
            Assert.Contains("runner-5912@localhost", stderr, StringComparison.Ordinal);
            var deadline = DateTime.UtcNow.AddSeconds(10);
            while (pids.Any(ProcessSignals.IsAlive) && DateTime.UtcNow < deadline)
                await Task.Delay(100);
            Assert.DoesNotContain(pids, ProcessSignals.IsAlive);
            Assert.Empty(EpmdPids(4512));

            (exit, _, _) = await RunAsync("status", onlyDir);
            Assert.Equal(1, exit);
        }
        finally
        {
            // Whatever failed above: nothing of this test outlives it (by pid, never by name).
            foreach (var pid in pids.Concat(EpmdPids(4512)).Distinct().Where(ProcessSignals.IsAlive))
            {
                output.WriteLine($"killing leftover pid {pid}");
                ProcessSignals.Send(pid, 9);
            }
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public async Task Postgres_status_and_env_given_only_the_state_folder_name_the_port_and_role_it_was_started_with()
    {
        var dir = Directory.CreateTempSubdirectory("runner-pg-script-").FullName;
        var onlyDir = new Dictionary<string, string> { ["RUNNER_PG_DIR"] = dir };
        var custom = new Dictionary<string, string>(onlyDir) { ["RUNNER_PG_PORT"] = "5913", ["RUNNER_PG_PASSWORD"] = "not-the-default" };
        var postmaster = 0;
        try
        {
            var (exit, stdout, stderr) = await RunAsync(PostgresScript, "start", custom);
            Assert.True(exit == 0, $"start failed ({exit}):\n{stderr}");
            postmaster = int.Parse(File.ReadLines(Path.Combine(dir, "data", "postmaster.pid")).First(), System.Globalization.CultureInfo.InvariantCulture);
            const string expected = "Host=127.0.0.1;Port=5913;Database=runner;Username=runner;Password=not-the-default";
            Assert.Contains(expected, stdout, StringComparison.Ordinal);

            (exit, _, stderr) = await RunAsync(PostgresScript, "status", onlyDir);
            Assert.True(exit == 0, $"status given only the folder says not running ({exit}):\n{stderr}");
            (exit, stdout, _) = await RunAsync(PostgresScript, "env", onlyDir);
            Assert.Equal(0, exit);
            Assert.Contains(expected, stdout, StringComparison.Ordinal);

            (exit, _, stderr) = await RunAsync(PostgresScript, "stop", onlyDir);
            Assert.True(exit == 0, $"stop failed ({exit}):\n{stderr}");
            Assert.False(ProcessSignals.IsAlive(postmaster));
            (exit, _, _) = await RunAsync(PostgresScript, "status", onlyDir);
            Assert.Equal(1, exit);
        }
        finally
        {
            if (postmaster > 0 && ProcessSignals.IsAlive(postmaster))
            {
                output.WriteLine($"stopping leftover postmaster {postmaster}");
                ProcessSignals.Send(postmaster, 3); // SIGQUIT: immediate shutdown, its children with it
            }
            Directory.Delete(dir, recursive: true);
        }
    }

    static int ReadPid(string file) => int.Parse(File.ReadAllText(file).Trim(), System.Globalization.CultureInfo.InvariantCulture);

    /// <summary>epmd processes listening on <paramref name="port"/> (their environment has ERL_EPMD_PORT=port).</summary>
    static List<int> EpmdPids(int port)
    {
        var found = new List<int>();
        foreach (var entry in Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(entry), out var pid))
                continue;
            try
            {
                if (File.ReadAllText(Path.Combine(entry, "comm")).Trim() != "epmd")
                    continue;
                var environment = File.ReadAllText(Path.Combine(entry, "environ")).Split('\0');
                var cmdline = File.ReadAllText(Path.Combine(entry, "cmdline")).Split('\0');
                if (environment.Contains($"ERL_EPMD_PORT={port}") || cmdline.Contains(port.ToString(System.Globalization.CultureInfo.InvariantCulture)))
                    found.Add(pid);
            }
            catch (IOException)
            {
            }
            catch (UnauthorizedAccessException)
            {
            }
        }
        return found;
    }

    static Task<(int Exit, string Stdout, string Stderr)> RunAsync(string verb, IReadOnlyDictionary<string, string> settings) =>
        RunAsync(Script, verb, settings);

    static async Task<(int Exit, string Stdout, string Stderr)> RunAsync(string script, string verb, IReadOnlyDictionary<string, string> settings)
    {
        var start = new ProcessStartInfo("bash") { RedirectStandardOutput = true, RedirectStandardError = true };
        start.ArgumentList.Add(script);
        start.ArgumentList.Add(verb);
        // Only what the test gives: no RUNNER_BROKER_* or RUNNER_PG_* of whoever runs the tests.
        foreach (var key in start.Environment.Keys.Where(k => k.StartsWith("RUNNER_BROKER_", StringComparison.Ordinal) || k.StartsWith("RUNNER_PG_", StringComparison.Ordinal)).ToList())
            start.Environment.Remove(key);
        foreach (var (key, value) in settings)
            start.Environment[key] = value;
        using var process = Process.Start(start)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(180));
        try
        {
            await process.WaitForExitAsync(timeout.Token);
        }
        catch (OperationCanceledException)
        {
            // A script that hangs must not outlive the test with what it started.
            process.Kill(entireProcessTree: true);
            await process.WaitForExitAsync();
            throw new TimeoutException($"{script} {verb} did not finish within 180 s:\n{await stdout}\n{await stderr}");
        }
        return (process.ExitCode, await stdout, await stderr);
    }
}
