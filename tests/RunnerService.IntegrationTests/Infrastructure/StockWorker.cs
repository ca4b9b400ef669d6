namespace RunnerService.IntegrationTests.Infrastructure;

/// <summary>
/// Which build of the stock worker the runners under test start, decided once per test run. The default is the
/// service's own default: the Native AOT worker at worker/WorkerProcess next to the service (RunnerOptions.AotWorkerPath;
/// deploy/local/publish-aot-worker.sh puts it there, run-tests.sh runs that first), so the tested path is the one users
/// get. Without it, or when it is older than the worker's sources, the runners start the JIT build instead and
/// <see cref="AotWorkerFactAttribute"/> tests are skipped. BrokerFixture prints <see cref="Note"/> once per run.
/// </summary>
static class StockWorker
{
    /// <summary>Set by run-tests.sh (CI): a missing or stale AOT worker fails the tests instead of falling back.</summary>
    const string RequireVariable = "RUNNER_TEST_REQUIRE_AOT_WORKER";

    public static string AotPath => Path.Combine(RepoPaths.ServiceDirectory, "worker", "WorkerProcess");

    public static string JitPath => Path.Combine(RepoPaths.ServiceDirectory, "WorkerProcess");

    public static bool Required => Environment.GetEnvironmentVariable(RequireVariable) == "1";

    /// <summary>Null when the AOT worker is there and up to date; else why not.</summary>
    static readonly Lazy<string?> Unavailable = new(WhyNotAot);

    public static bool RunsAot => Unavailable.Value is null;

    /// <summary>
    /// The <c>Runner__WorkerCommand</c> a runner needs so that it starts the chosen build, or null when the service's
    /// default already picks it. Throws when the AOT worker is required but cannot run.
    /// </summary>
    public static string? WorkerCommandOverride
    {
        get
        {
            if (Unavailable.Value is not { } reason)
                return null;
            if (Required)
                throw new InvalidOperationException($"{RequireVariable}=1 but {reason}: run deploy/local/publish-aot-worker.sh and build again");
            // Absent: the service falls back to the JIT build by itself. Stale: name the JIT build explicitly.
            return File.Exists(AotPath) ? JitPath : null;
        }
    }

    /// <summary>One line saying which build runs and why.</summary>
    public static string Note => Unavailable.Value is { } reason
        ? $"stock worker: JIT ({JitPath}), because {reason}. Each invocation is ~8x slower; bash deploy/local/publish-aot-worker.sh " +
          "publishes the AOT worker (deploy/local/run-tests.sh does it first)"
        : $"stock worker: Native AOT ({AotPath})";

    static string? WhyNotAot()
    {
        if (!File.Exists(AotPath))
            return $"there is no Native AOT worker at {AotPath}";
        var built = File.GetLastWriteTimeUtc(AotPath);
        var newer = WorkerSources().FirstOrDefault(f => File.GetLastWriteTimeUtc(f) > built);
        return newer is null ? null : $"the Native AOT worker at {AotPath} is older than {Path.GetRelativePath(RepoPaths.Root, newer)}";
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
                var parts = Path.GetRelativePath(RepoPaths.Root, path).Split(Path.DirectorySeparatorChar);
                if (!parts.Contains("bin") && !parts.Contains("obj"))
                    yield return path;
            }
        }
    }
}

/// <summary>
/// A test of the Native AOT worker itself: skipped, with <see cref="StockWorker.Note"/> as the reason, when the test
/// run falls back to the JIT worker (never under run-tests.sh, which requires the AOT worker).
/// </summary>
[AttributeUsage(AttributeTargets.Method)]
public sealed class AotWorkerFactAttribute : FactAttribute
{
    public AotWorkerFactAttribute()
    {
        if (!StockWorker.RunsAot && !StockWorker.Required)
            Skip = StockWorker.Note;
    }
}
