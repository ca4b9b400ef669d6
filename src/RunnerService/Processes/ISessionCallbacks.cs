using RunnerService.Contracts.Protocol;

namespace RunnerService.Processes;

/// <summary>What a session asks of the code that drives it while the worker runs.</summary>
interface ISessionCallbacks
{
    /// <summary>The worker started a sub-invocation: publish it.</summary>
    Task OnInvokeAsync(WorkerSession session, InvokeMessage invoke);

    /// <summary>The worker reported progress (it must not block the read loop).</summary>
    void OnProgress(WorkerSession session, ProgressMessage progress);
}
