namespace RunnerService.Processes;

public enum WorkerState
{
    Running,
    Paused,
    Exited,
}
