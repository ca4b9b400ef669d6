namespace RunnerService.IntegrationTests.Infrastructure;

/// <summary>
/// Which build of the stock worker the runners under test start, decided once per test run. The default is the
/// service's own default: the Native AOT worker at worker/WorkerProcess next to the service (RunnerOptions.AotWorkerPath;
/// deploy/local/publish-aot-worker.sh puts it there, run-tests.sh runs that first), so the tested path is the one users
/// get. Without it, or when it is older than the worker's sources, the runners start the JIT build instead.
/// </summary>
static class StockWorker
{
    /// <summary>Set by run-tests.sh (CI): a missing or stale AOT worker fails the tests instead of falling back.</summary>
    const string RequireVariable = "RUNNER_TEST_REQUIRE_AOT_WORKER";

    public static string AotPath => Path.Combine(RepoPaths.ServiceDirectory, "worker", "WorkerProcess");

    public static string JitPath => Path.Combine(RepoPaths.ServiceDirectory, "WorkerProcess");

    static readonly Lazy<(string? Override, string Note)> Choice = new(Choose);

    /// <summary>
    /// The <c>Runner__WorkerCommand</c> a runner needs so that it starts the chosen build, or null when the service's
    /// default already picks it.
    /// </summary>
    public static string? WorkerCommandOverride => Choice.Value.Override;

    /// <summary>One line saying which build runs and why; written once per test run (see RunnerProcess).</summary>
    public static string Note => Choice.Value.Note;

    static (string?, string) Choose()
    {
        string reason;
        if (!File.Exists(AotPath))
        {
            reason = $"no Native AOT worker at {AotPath}";
        }
        else
        {
            var built = File.GetLastWriteTimeUtc(AotPath);
            var newer = WorkerSources().FirstOrDefault(f => File.GetLastWriteTimeUtc(f) > built);
            if (newer is null)
                return (null, $"stock worker: Native AOT ({AotPath})");
            reason = $"the Native AOT worker at {AotPath} is older than {Path.GetRelativePath(RepoPaths.Root, newer)}";
        }
        if (Environment.GetEnvironmentVariable(RequireVariable) == "1")
            throw new InvalidOperationException($"{RequireVariable}=1 but {reason}: run deploy/local/publish-aot-worker.sh and build again");
        // Absent: the service falls back to the JIT build by itself. Stale: name the JIT build explicitly.
        var command = File.Exists(AotPath) ? JitPath : null;
        return (command, $"stock worker: JIT ({JitPath}), because {reason}. Each invocation is ~8x slower; " +
            "bash deploy/local/publish-aot-worker.sh publishes the AOT worker (deploy/local/run-tests.sh does it first)");
    }

    /// <summary>Every file the stock worker is built from (its projects, the worker SDK, the contracts, the build props).</summary>
    static IEnumerable<string> WorkerSources()
    {
        foreach (var file in new[] { "Directory.Build.props", "Directory.Packages.props", "global.json" })
        {
            var path = Path.Combine(RepoPaths.Root, file);
            if (File.Exists(path))
                yield return path;
        }
        foreach (var folder in new[] { Path.Combine("src", "WorkerProcess"), Path.Combine("src", "Contracts") })
        {
            foreach (var path in Directory.EnumerateFiles(Path.Combine(RepoPaths.Root, folder), "*", SearchOption.AllDirectories))
            {
                var relative = Path.GetRelativePath(RepoPaths.Root, path).Split(Path.DirectorySeparatorChar);
                if (!relative.Contains("bin") && !relative.Contains("obj"))
                    yield return path;
            }
        }
    }
}
