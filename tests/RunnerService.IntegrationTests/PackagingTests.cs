using System.Diagnostics;
using System.IO.Compression;
using System.Text.Json;
using System.Text.RegularExpressions;
using System.Xml.Linq;
using RunnerService.Contracts;
using RunnerService.IntegrationTests.Infrastructure;
using Xunit.Abstractions;

namespace RunnerService.IntegrationTests;

/// <summary>
/// The newcomer's path with the packages: <c>dotnet pack</c> the repository, then, in a folder outside it (no
/// Directory.Build.props, no central package versions), build the worker exactly as docs/tasks.md shows it and the
/// sample client of docs/examples/dotnet-client, both against the packed packages in a local feed, and run one
/// invocation through a real service with each.
/// </summary>
[Collection(BrokerCollection.Name)]
public sealed class PackagingTests(BrokerFixture broker, ITestOutputHelper output)
{
    static readonly TimeSpan Patience = TimeSpan.FromSeconds(60);
    static readonly string[] Packages = ["RunnerService.Contracts.Protocol", "RunnerService.Contracts", "RunnerService.Worker"];

    [Fact]
    [Trait("Category", "Integration")]
    public async Task The_docs_worker_and_the_sample_client_build_outside_the_repository_from_the_packages_and_run_an_invocation()
    {
        var work = Directory.CreateTempSubdirectory("runner-packaging-");
        try
        {
            // Outside the repository means: nothing above the folder that MSBuild would import.
            Assert.False(work.FullName.StartsWith(RepoPaths.Root + Path.DirectorySeparatorChar, StringComparison.Ordinal), $"{work.FullName} is inside the repository");
            for (var dir = work; dir is not null; dir = dir.Parent)
            {
                foreach (var name in (string[])["Directory.Build.props", "Directory.Build.targets", "Directory.Packages.props"])
                    Assert.False(File.Exists(Path.Combine(dir.FullName, name)), $"{name} above the test folder: {dir.FullName}");
            }

            var version = RepositoryVersion();
            var feed = Path.Combine(work.FullName, "feed");
            await PackAsync(feed);
            CheckPackages(feed, version);

            // (a) the worker of docs/tasks.md: its three files, verbatim but for the feed's path.
            var workerDir = Directory.CreateDirectory(Path.Combine(work.FullName, "worker")).FullName;
            var doc = File.ReadAllText(Path.Combine(RepoPaths.Root, "docs", "tasks.md"));
            var csproj = DocFile(doc, "ExampleWorker.csproj");
            Assert.Contains($"<PackageReference Include=\"RunnerService.Worker\" Version=\"{version}\" />", csproj);
            Assert.DoesNotContain("ProjectReference", csproj);
            File.WriteAllText(Path.Combine(workerDir, "ExampleWorker.csproj"), csproj);
            File.WriteAllText(Path.Combine(workerDir, "Program.cs"), DocFile(doc, "Program.cs"));
            File.WriteAllText(Path.Combine(workerDir, "nuget.config"), PointAtFeed(DocFile(doc, "nuget.config"), "/path/to/RunnerService/artifacts/packages", feed));

            // (b) the sample client, copied as it is but for the feed's path.
            var sample = Path.Combine(RepoPaths.Root, "docs", "examples", "dotnet-client");
            var clientDir = Directory.CreateDirectory(Path.Combine(work.FullName, "client")).FullName;
            var clientProject = File.ReadAllText(Path.Combine(sample, "DotnetClient.csproj"));
            Assert.Contains($"<PackageReference Include=\"RunnerService.Contracts\" Version=\"{version}\" />", clientProject);
            Assert.DoesNotContain("ProjectReference", clientProject);
            File.WriteAllText(Path.Combine(clientDir, "DotnetClient.csproj"), clientProject);
            File.Copy(Path.Combine(sample, "Program.cs"), Path.Combine(clientDir, "Program.cs"));
            File.WriteAllText(Path.Combine(clientDir, "nuget.config"), PointAtFeed(File.ReadAllText(Path.Combine(sample, "nuget.config")), "../../../artifacts/packages", feed));

            // Its own package folder: a repacked 0.1.0 must not be shadowed by a copy cached earlier under the same version.
            var packages = Path.Combine(work.FullName, "nuget-packages");
            await DotnetAsync(workerDir, packages, "build", "-c", "Release");
            await DotnetAsync(clientDir, packages, "build", "-c", "Release");

            var workerBin = Path.Combine(workerDir, "bin", "Release", "net10.0");
            var workerExe = Path.Combine(workerBin, "ExampleWorker");
            Assert.True(File.Exists(workerExe), $"the worker apphost is missing: {workerExe}");
            // The worker SDK brings only the protocol: no MassTransit (and no RunnerService.Contracts) in a worker.
            Assert.Contains("RunnerService.Contracts.Protocol.dll", Directory.GetFiles(workerBin).Select(Path.GetFileName));
            Assert.Empty(Directory.GetFiles(workerBin, "MassTransit*"));
            Assert.False(File.Exists(Path.Combine(workerBin, "RunnerService.Contracts.dll")));

            await using var env = await RunnerEnvironment.StartAsync(broker, output, slots: 2,
                new Dictionary<string, string> { ["Runner__WorkerCommand"] = workerExe });

            var greet = await env.Bus.Client.RunAsync("greet", Json.Parse("{\"name\":\"Ada\"}")).WaitAsync(Patience);
            Assert.True(greet.Status == InvocationStatus.Succeeded, $"greet ended {greet.Status}: {greet.Error}");
            Assert.Equal("Hello, Ada!", greet.Result!.Value.GetString());

            // The sample client publishes through the packed RunnerService.Contracts and prints the completion.
            var (exitCode, stdout, stderr) = await RunClientAsync(Path.Combine(clientDir, "bin", "Release", "net10.0", "DotnetClient"),
                env.VirtualHost.AmqpUri, "word-count", "{\"text\":\"one two three\"}");
            output.WriteLine($"client stdout: {stdout}");
            Assert.True(exitCode == 0, $"the client exited {exitCode}\nstdout: {stdout}\nstderr: {stderr}");
            using var line = JsonDocument.Parse(stdout.Trim());
            Assert.Equal("Succeeded", line.RootElement.GetProperty("status").GetString());
            Assert.Equal(3, line.RootElement.GetProperty("result").GetProperty("words").GetInt32());
            var id = line.RootElement.GetProperty("invocationId").GetGuid();
            var seen = await env.Bus.WaitForCompletedAsync(id, Patience);
            Assert.Equal("word-count", seen.TaskName);
        }
        finally
        {
            work.Delete(recursive: true);
        }
    }

    /// <summary>The one version of the packages: &lt;Version&gt; in Directory.Build.props.</summary>
    static string RepositoryVersion()
    {
        var props = XDocument.Load(Path.Combine(RepoPaths.Root, "Directory.Build.props"));
        var version = props.Descendants("Version").Single().Value.Trim();
        Assert.Matches(@"^\d+\.\d+\.\d+", version);
        return version;
    }

    /// <summary>Packs the three packages from this configuration's build (already built by this test project's references).</summary>
    async Task PackAsync(string feed)
    {
        string[] projects =
        [
            Path.Combine("src", "Contracts", "Protocol", "RunnerService.Contracts.Protocol.csproj"),
            Path.Combine("src", "Contracts", "RunnerService.Contracts.csproj"),
            Path.Combine("src", "WorkerProcess", "RunnerService.Worker", "RunnerService.Worker.csproj"),
        ];
        foreach (var project in projects)
            await DotnetAsync(RepoPaths.Root, packages: null, "pack", project, "-c", RepoPaths.Configuration, "--no-build", "-o", feed);
    }

    /// <summary>What a consumer gets: a README, the right dependencies, and MassTransit only in Contracts, kept below 9.</summary>
    static void CheckPackages(string feed, string version)
    {
        foreach (var id in Packages)
        {
            var path = Path.Combine(feed, $"{id}.{version}.nupkg");
            Assert.True(File.Exists(path), $"{path} was not packed");
            using var zip = ZipFile.OpenRead(path);
            Assert.NotNull(zip.GetEntry("README.md"));
            Assert.NotNull(zip.GetEntry($"lib/net10.0/{id}.dll"));
            using var nuspecStream = zip.GetEntry($"{id}.nuspec")!.Open();
            var nuspec = XDocument.Load(nuspecStream);
            XNamespace ns = nuspec.Root!.Name.Namespace;
            var metadata = nuspec.Root.Element(ns + "metadata")!;
            Assert.Equal(id, metadata.Element(ns + "id")!.Value);
            Assert.Equal(version, metadata.Element(ns + "version")!.Value);
            Assert.Equal("README.md", metadata.Element(ns + "readme")?.Value);
            Assert.False(string.IsNullOrWhiteSpace(metadata.Element(ns + "description")?.Value));
            var dependencies = metadata.Descendants(ns + "dependency")
                .ToDictionary(d => d.Attribute("id")!.Value, d => d.Attribute("version")!.Value);
            switch (id)
            {
                case "RunnerService.Contracts.Protocol":
                    Assert.Empty(dependencies);
                    break;
                case "RunnerService.Contracts":
                    Assert.Equal("[8.5.12, 9.0.0)", dependencies["MassTransit"]);
                    Assert.Equal(version, dependencies["RunnerService.Contracts.Protocol"]);
                    Assert.Equal(2, dependencies.Count);
                    break;
                case "RunnerService.Worker":
                    Assert.Equal(new Dictionary<string, string> { ["RunnerService.Contracts.Protocol"] = version }, dependencies);
                    break;
            }
        }
    }

    /// <summary>The fenced block that follows <c>&lt;!-- file: NAME --&gt;</c> in a markdown document.</summary>
    static string DocFile(string markdown, string name)
    {
        var match = Regex.Match(markdown, $@"<!-- file: {Regex.Escape(name)} -->\s*\n```[a-z]*\n(.*?)\n```", RegexOptions.Singleline);
        Assert.True(match.Success, $"docs/tasks.md has no block marked <!-- file: {name} -->");
        return match.Groups[1].Value + "\n";
    }

    /// <summary>
    /// The nuget.config with its RunnerService source pointed at the test's feed. For speed, packages other than
    /// RunnerService.* may also come from the machine's own package folder (as a plain local source), then nuget.org.
    /// </summary>
    static string PointAtFeed(string config, string placeholder, string feed)
    {
        Assert.Contains($"value=\"{placeholder}\"", config);
        config = config.Replace($"value=\"{placeholder}\"", $"value=\"{feed}\"", StringComparison.Ordinal);
        var machinePackages = Environment.GetEnvironmentVariable("NUGET_PACKAGES") is { Length: > 0 } configured
            ? configured
            : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages");
        if (!Directory.Exists(machinePackages))
            return config;
        const string nugetOrg = "<add key=\"nuget.org\"";
        const string nugetOrgMapping = "<packageSource key=\"nuget.org\">";
        Assert.Contains(nugetOrg, config);
        Assert.Contains(nugetOrgMapping, config);
        return config
            .Replace(nugetOrg, $"<add key=\"machine-packages\" value=\"{machinePackages}\" />\n    {nugetOrg}", StringComparison.Ordinal)
            .Replace(nugetOrgMapping, $"<packageSource key=\"machine-packages\">\n      <package pattern=\"*\" />\n    </packageSource>\n    {nugetOrgMapping}", StringComparison.Ordinal);
    }

    /// <summary>Runs dotnet with no build servers left behind and none of this test host's MSBuild settings.</summary>
    async Task DotnetAsync(string directory, string? packages, params string[] args)
    {
        var start = new ProcessStartInfo("dotnet") { WorkingDirectory = directory, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var arg in args)
            start.ArgumentList.Add(arg);
        start.ArgumentList.Add("--disable-build-servers");
        // No vulnerability audit: an advisory published tomorrow for a transitive package, or nuget.org out of reach
        // for the audit alone, must not fail a build that only proves the packages are usable.
        start.ArgumentList.Add("-p:NuGetAudit=false");
        start.ArgumentList.Add("-nologo");
        foreach (var key in start.Environment.Keys.Where(k => k.StartsWith("MSBuild", StringComparison.OrdinalIgnoreCase)).ToList())
            start.Environment.Remove(key);
        start.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
        start.Environment["DOTNET_NOLOGO"] = "1";
        if (packages is not null)
            start.Environment["NUGET_PACKAGES"] = packages;
        var watch = Stopwatch.StartNew();
        var (exitCode, stdout, stderr) = await RunAsync(start, TimeSpan.FromSeconds(180));
        output.WriteLine($"dotnet {string.Join(' ', args)} (in {directory}): exit {exitCode} after {watch.Elapsed.TotalSeconds:F1} s");
        Assert.True(exitCode == 0, $"dotnet {string.Join(' ', args)} failed in {directory}:\n{stdout}\n{stderr}");
        Assert.DoesNotContain("warning", stdout.Replace(" 0 Warning(s)", "", StringComparison.Ordinal), StringComparison.OrdinalIgnoreCase);
    }

    static Task<(int ExitCode, string Stdout, string Stderr)> RunClientAsync(string client, Uri broker, string task, string arguments)
    {
        var start = new ProcessStartInfo(client) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        start.ArgumentList.Add(task);
        start.ArgumentList.Add(arguments);
        start.Environment["ConnectionStrings__RabbitMq"] = broker.ToString();
        return RunAsync(start, TimeSpan.FromSeconds(90));
    }

    static async Task<(int ExitCode, string Stdout, string Stderr)> RunAsync(ProcessStartInfo start, TimeSpan limit)
    {
        using var process = Process.Start(start)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(limit);
        try
        {
            await process.WaitForExitAsync(timeout.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            await process.WaitForExitAsync();
            throw new TimeoutException($"{start.FileName} {string.Join(' ', start.ArgumentList)} did not finish within {limit}:\n{await stdout}\n{await stderr}");
        }
        return (process.ExitCode, await stdout, await stderr);
    }
}
