namespace RunnerService.Processes;

/// <summary>
/// A worker process just started: its pid, this side's ends of its stdin, stdout and stderr, and its exit status
/// (128+N for death by signal N). <paramref name="Owner"/> is disposed once the worker is gone and its pipes closed.
/// </summary>
sealed record SpawnedWorker(int Pid, Stream Stdin, Stream Stdout, Stream Stderr, Task<int> Exit, IDisposable? Owner)
{
    /// <summary>A worker started through <see cref="System.Diagnostics.Process"/> (the path for another user's workers).</summary>
    public static SpawnedWorker Of(System.Diagnostics.Process process) => new(process.Id,
        process.StandardInput.BaseStream, process.StandardOutput.BaseStream, process.StandardError.BaseStream,
        ExitCodeAsync(process), process);

    static async Task<int> ExitCodeAsync(System.Diagnostics.Process process)
    {
        await process.WaitForExitAsync().ConfigureAwait(false);
        return process.ExitCode;
    }
}
