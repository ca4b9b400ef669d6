namespace RunnerService.Worker;

/// <summary>The tasks one worker executable can run, by name. Names are case-sensitive.</summary>
public sealed class TaskRegistry
{
    readonly Dictionary<string, TaskHandler> _tasks = new(StringComparer.Ordinal);

    public TaskRegistry Add(string name, TaskHandler handler)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(name);
        ArgumentNullException.ThrowIfNull(handler);
        if (!_tasks.TryAdd(name, handler))
            throw new ArgumentException($"A task named '{name}' is already registered.", nameof(name));
        return this;
    }

    public bool TryGet(string name, out TaskHandler handler) => _tasks.TryGetValue(name, out handler!);

    public IReadOnlyCollection<string> Names => _tasks.Keys;
}
