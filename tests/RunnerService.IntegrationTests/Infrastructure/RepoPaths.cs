namespace RunnerService.IntegrationTests.Infrastructure;

/// <summary>Finds the repository and the service build that matches this test build's configuration.</summary>
static class RepoPaths
{
    public static string Root { get; } = FindRoot();

    /// <summary>Debug or Release, read from this test assembly's own output path (…/bin/Release/net10.0/).</summary>
    public static string Configuration { get; } = new DirectoryInfo(AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar)).Parent!.Name;

    public static string ServiceDirectory => Path.Combine(Root, "src", "RunnerService", "bin", Configuration, "net10.0");

    public static string ServiceDll => Path.Combine(ServiceDirectory, "RunnerService.dll");

    static string FindRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "RunnerService.sln")))
                return dir.FullName;
        }
        throw new InvalidOperationException($"RunnerService.sln not found above {AppContext.BaseDirectory}");
    }

    /// <summary>The system python3 (Debian's, where python3-pika lives), else the first on PATH.</summary>
    public static string Python3()
    {
        if (File.Exists("/usr/bin/python3"))
            return "/usr/bin/python3";
        foreach (var dir in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries))
        {
            var candidate = Path.Combine(dir, "python3");
            if (File.Exists(candidate))
                return candidate;
        }
        throw new InvalidOperationException("python3 is not installed (needed for the Python examples of docs/examples)");
    }
}
