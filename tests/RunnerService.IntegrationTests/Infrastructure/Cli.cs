using System.Diagnostics;

namespace RunnerService.IntegrationTests.Infrastructure;

/// <summary>Runs the RunnerService executable's CLI verbs as a user would.</summary>
static class Cli
{
    public static Task<(int ExitCode, string Stdout, string Stderr)> RunAsync(Uri broker, params string[] args) => RunAsync(broker.ToString(), args);

    /// <summary>As above, with the broker setting given as text (which may be wrong on purpose).</summary>
    public static async Task<(int ExitCode, string Stdout, string Stderr)> RunAsync(string broker, params string[] args)
    {
        var start = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        start.ArgumentList.Add(RepoPaths.ServiceDll);
        foreach (var arg in args)
            start.ArgumentList.Add(arg);
        start.Environment["ConnectionStrings__RabbitMq"] = broker;
        using var process = Process.Start(start)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(120));
        try
        {
            await process.WaitForExitAsync(timeout.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill();
            throw new TimeoutException($"CLI {string.Join(' ', args)} did not finish:\n{await stdout}\n{await stderr}");
        }
        return (process.ExitCode, await stdout, await stderr);
    }
}
