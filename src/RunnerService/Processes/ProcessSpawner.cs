using System.Collections.Concurrent;

namespace RunnerService.Processes;

/// <summary>
/// Starts every worker from one long-lived thread. Linux delivers the parent-death signal (PR_SET_PDEATHSIG,
/// set by the worker) when the *thread* that forked it exits; thread-pool threads come and go, this one does not.
/// </summary>
sealed class ProcessSpawner : IDisposable
{
    readonly BlockingCollection<(Func<SpawnedWorker> Start, TaskCompletionSource<SpawnedWorker> Started)> _requests = new();
    readonly Thread _thread;

    public ProcessSpawner()
    {
        _thread = new Thread(Loop) { IsBackground = true, Name = "worker-spawner" };
        _thread.Start();
    }

    /// <summary>Runs <paramref name="start"/> on the spawner thread.</summary>
    public Task<SpawnedWorker> StartAsync(Func<SpawnedWorker> start)
    {
        var started = new TaskCompletionSource<SpawnedWorker>(TaskCreationOptions.RunContinuationsAsynchronously);
        _requests.Add((start, started));
        return started.Task;
    }

    void Loop()
    {
        foreach (var (start, started) in _requests.GetConsumingEnumerable())
        {
            try
            {
                started.TrySetResult(start());
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
