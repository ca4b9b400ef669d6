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
}
