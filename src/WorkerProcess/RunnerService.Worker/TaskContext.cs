using System.Text.Json;
using System.Text.Json.Nodes;
using RunnerService.Contracts;
using RunnerService.Contracts.Protocol;

namespace RunnerService.Worker;

/// <summary>What a running task sees: its invocation, its arguments, and the way to start and await sub-invocations.</summary>
public sealed class TaskContext
{
    static readonly JsonElement NullElement = JsonDocument.Parse("null").RootElement;
    readonly WorkerChannel _channel;
    readonly HashSet<Guid> _started = [];

    internal TaskContext(StartInvocationMessage start, WorkerChannel channel)
    {
        _channel = channel;
        InvocationId = start.InvocationId;
        TaskName = start.TaskName;
        Arguments = start.Arguments ?? NullElement;
        Attempt = start.Attempt;
        ParentInvocationId = start.ParentInvocationId;
        TraceParent = start.TraceParent;
    }

    public Guid InvocationId { get; }
    public string TaskName { get; }
    public JsonElement Arguments { get; }
    public int Attempt { get; }
    public Guid? ParentInvocationId { get; }

    /// <summary>W3C traceparent of the runner's span for this invocation, when tracing is on.</summary>
    public string? TraceParent { get; }

    /// <summary>Writes a log line to stderr; the runner attaches it to this invocation's log scope.</summary>
    public void Log(string message) => Console.Error.WriteLine(message);

    public void ReportProgress(double fraction, string? message = null) =>
        _channel.Send(new ProgressMessage { Fraction = fraction, Message = message });

    /// <summary>Reads an integer argument; fails the task with a clear message when it is missing and has no default.</summary>
    public int GetInt32(string name, int? defaultValue = null) =>
        TryGetArgument(name, out var value) && value.ValueKind == JsonValueKind.Number ? value.GetInt32()
        : defaultValue ?? throw MissingArgument(name, "an integer");

    public string GetString(string name, string? defaultValue = null) =>
        TryGetArgument(name, out var value) && value.ValueKind == JsonValueKind.String ? value.GetString()!
        : defaultValue ?? throw MissingArgument(name, "a string");

    public Guid GetGuid(string name) =>
        TryGetArgument(name, out var value) && value.ValueKind == JsonValueKind.String && value.TryGetGuid(out var id) ? id
        : throw MissingArgument(name, "a GUID string");

    public bool TryGetArgument(string name, out JsonElement value)
    {
        value = default;
        return Arguments.ValueKind == JsonValueKind.Object && Arguments.TryGetProperty(name, out value);
    }

    /// <summary>Starts a sub-invocation at once (it runs in its own process) and returns a handle to wait for.</summary>
    public InvocationHandle Invoke(string taskName, JsonNode? arguments = null, TimeSpan? timeout = null)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(taskName);
        var id = Guid.CreateVersion7();
        _channel.Send(new InvokeMessage
        {
            InvocationId = id,
            TaskName = taskName,
            Arguments = arguments is null ? null : JsonSerializer.SerializeToElement(arguments, WorkerJsonContext.Default.JsonNode),
            Timeout = timeout,
        });
        _started.Add(id);
        return new InvocationHandle(id, taskName);
    }

    /// <summary>Waits for one invocation and returns its result; throws <see cref="InvocationFailedException"/> if it did not succeed.</summary>
    public async ValueTask<JsonElement> Wait(InvocationHandle handle) => (await WaitAll(handle))[0];

    /// <summary>Waits for any invocation by id, including ones this task did not start.</summary>
    public async ValueTask<JsonElement> WaitFor(Guid invocationId) => (await WaitAll(new InvocationHandle(invocationId, "")))[0];

    /// <summary>
    /// Waits until all the given invocations are final. The process is paused meanwhile (it holds no slot).
    /// Throws <see cref="InvocationFailedException"/> for the first one, in argument order, that did not succeed.
    /// </summary>
    public async ValueTask<WaitResults> WaitAll(params InvocationHandle[] handles)
    {
        var outcomes = await WaitAllSettled(handles);
        foreach (var outcome in outcomes)
        {
            if (outcome.Status != InvocationStatus.Succeeded)
                throw new InvocationFailedException(outcome.InvocationId, outcome.Status,
                    outcome.Error ?? new InvocationError { Type = InvocationErrorTypes.TaskError, Message = $"ended {outcome.Status}" });
        }
        return new WaitResults([.. outcomes.Select(o => o.Result ?? NullElement)]);
    }

    /// <summary>Like <see cref="WaitAll"/> but returns every outcome, failed or not, without throwing.</summary>
    /// <remarks>
    /// Returns at once with the wait under way; the caller's thread is not blocked while the resume is awaited (on
    /// Unix .NET reads the stdin pipe on a thread-pool thread).
    /// </remarks>
    public async ValueTask<IReadOnlyList<DependencyOutcome>> WaitAllSettled(params InvocationHandle[] handles)
    {
        ArgumentNullException.ThrowIfNull(handles);
        if (handles.Length == 0)
            return [];
        var ids = handles.Select(h => h.InvocationId).ToArray();
        _channel.Send(new WaitMessage { InvocationIds = ids });
        // The runner pauses this process now; the next line on stdin arrives after it is resumed.
        var reply = await _channel.ReceiveAsync().ConfigureAwait(false);
        if (reply is not ResumeMessage resume)
            throw new InvalidDataException(reply is null ? "stdin closed while waiting for a resume" : $"expected a resume message, got {reply.GetType().Name}");
        var byId = resume.Results.ToDictionary(r => r.InvocationId);
        var ordered = new DependencyOutcome[ids.Length];
        for (var i = 0; i < ids.Length; i++)
        {
            ordered[i] = byId.TryGetValue(ids[i], out var outcome) ? outcome
                : throw new InvalidDataException($"the resume message has no outcome for {ids[i]}");
        }
        return ordered;
    }

    static TaskFailedException MissingArgument(string name, string kind) =>
        new($"argument '{name}' must be {kind}", "InvalidArguments");
}
