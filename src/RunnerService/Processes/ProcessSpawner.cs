using System.Collections.Concurrent;
using System.Diagnostics;

namespace RunnerService.Processes;

/// <summary>
/// Starts every worker from one long-lived thread. Linux delivers the parent-death signal (PR_SET_PDEATHSIG,
/// set by the worker) when the *thread* that forked it exits; thread-pool threads come and go, this one does not.
/// </summary>
sealed class ProcessSpawner : IDisposable
{
    readonly BlockingCollection<(ProcessStartInfo StartInfo, TaskCompletionSource<Process> Started)> _requests = new();
    readonly Thread _thread;

    public ProcessSpawner()
    {
        _thread = new Thread(Loop) { IsBackground = true, Name = "worker-spawner" };
        _thread.Start();
    }

    public Task<Process> StartAsync(ProcessStartInfo startInfo)
    {
        var started = new TaskCompletionSource<Process>(TaskCreationOptions.RunContinuationsAsynchronously);
        _requests.Add((startInfo, started));
        return started.Task;
    }

    void Loop()
    {
        foreach (var (startInfo, started) in _requests.GetConsumingEnumerable())
        {
            try
            {
                var process = new Process { StartInfo = startInfo, EnableRaisingEvents = true };
                process.Start();
                started.TrySetResult(process);
            }
            catch (Exception ex)
            {
                started.TrySetException(ex);
            }
        }
        // Keep the thread (and so the children's parent-death link) alive until the process exits.
        Thread.Sleep(Timeout.Infinite);
    }

    public void Dispose() => _requests.CompleteAdding();
}
