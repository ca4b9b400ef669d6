using System.Text;
using System.Text.Json;
using RunnerService.Contracts;
using RunnerService.Contracts.Protocol;

namespace RunnerService.Worker;

/// <summary>
/// The worker executable's main loop: says hello, reads one invocation from stdin, runs the task,
/// writes <c>result</c> or <c>error</c> to stdout, then sends the task's span when tracing is on (<see cref="SpanExporter"/>),
/// and returns the process exit code. In reuse mode (the invocation line says <c>reuse</c>) it reads the next
/// invocation meanwhile, until the end of stdin.
/// </summary>
public static class WorkerHost
{
    /// <summary>Environment variable through which the runner passes its pid (for the parent-death check).</summary>
    public const string ParentPidVariable = "RUNNER_PARENT_PID";

    /// <summary>Exit code when the runner died before the worker could attach to it.</summary>
    public const int ExitParentGone = 70;

    /// <summary>Exit code when the runner broke the protocol.</summary>
    public const int ExitProtocolError = 2;

    public static async Task<int> RunAsync(Action<TaskRegistry> configure)
    {
        ArgumentNullException.ThrowIfNull(configure);
        _ = int.TryParse(Environment.GetEnvironmentVariable(ParentPidVariable), out var parentPid);
        if (!NativeMethods.DieWithParent(parentPid))
            return ExitParentGone;

        var registry = new TaskRegistry();
        configure(registry);

        // Plain file streams on fds 0, 1 and 2 rather than System.Console's: a worker lives for one invocation, and
        // initialising Console (terminal handling, its signal thread) was a measurable share of its CPU.
        var input = new StreamReader(OpenFd(0, FileAccess.Read), new UTF8Encoding(false), false, 1 << 16);
        var channel = new WorkerChannel(OpenFd(1, FileAccess.Write), input);
        // stdout belongs to the protocol: a task's Console.Write goes to stderr (the task log) instead of breaking it.
        var log = TextWriter.Synchronized(new StreamWriter(OpenFd(2, FileAccess.Write), new UTF8Encoding(false)) { AutoFlush = true });
        Console.SetOut(log);
        Console.SetError(log);
        channel.Send(new HelloMessage { Pid = Environment.ProcessId, Reusable = true });

        var exports = new SpanExporter();
        try
        {
            return await ServeAsync(registry, channel, exports);
        }
        finally
        {
            // Spans still being sent (bounded): after the last result, before the exit that frees the runner's slot.
            await exports.DrainAsync();
        }
    }

    /// <summary>
    /// One invocation, unless the runner offers reuse (Runner:MaxInvocationsPerProcess): then the next one follows on
    /// stdin after each outcome, and the end of stdin ends the process.
    /// </summary>
    static async Task<int> ServeAsync(TaskRegistry registry, WorkerChannel channel, SpanExporter exports)
    {
        while (true)
        {
            WorkerMessage? next;
            try
            {
                next = channel.Receive();
            }
            catch (InvalidDataException ex)
            {
                channel.Send(Error(InvocationErrorTypes.ProtocolViolation, ex.Message));
                return ExitProtocolError;
            }
            if (next is null)
                return 0; // end of stdin: a pre-spawned worker that was not needed, or the end of reuse
            if (next is not StartInvocationMessage start)
            {
                channel.Send(Error(InvocationErrorTypes.ProtocolViolation, $"expected an 'invocation' message, got '{next.GetType().Name}'"));
                return ExitProtocolError;
            }
            if (start.Protocol != WorkerProtocol.Version)
            {
                channel.Send(Error(InvocationErrorTypes.ProtocolViolation, $"protocol version {start.Protocol} is not supported; this worker speaks {WorkerProtocol.Version}"));
                return ExitProtocolError;
            }
            await RunOneAsync(registry, channel, start, exports);
            if (!start.Reuse)
                return 0;
        }
    }

    static async Task RunOneAsync(TaskRegistry registry, WorkerChannel channel, StartInvocationMessage start, SpanExporter exports)
    {
        if (!registry.TryGet(start.TaskName, out var handler))
        {
            channel.Send(Error(InvocationErrorTypes.UnknownTask,
                $"unknown task '{start.TaskName}'; this worker knows: {string.Join(", ", registry.Names.Order(StringComparer.Ordinal))}"));
            return;
        }

        var tracing = WorkerTracing.Start(start.TraceParent);
        var outcome = await RunTaskAsync(handler, new TaskContext(start, channel));
        tracing?.End(start.TaskName, start.InvocationId, (outcome as ErrorMessage)?.Error.Type);
        channel.Send(outcome);
        // Only now, with the outcome flushed to the runner: the export never delays a result.
        if (tracing is not null)
            exports.Export(tracing);
    }

    static FileStream OpenFd(int fd, FileAccess access) =>
        new(new Microsoft.Win32.SafeHandles.SafeFileHandle(fd, ownsHandle: false), access, bufferSize: 0);

    static async Task<WorkerMessage> RunTaskAsync(TaskHandler handler, TaskContext context)
    {
        try
        {
            var result = await handler(context);
            return new ResultMessage { Result = result is null ? null : JsonSerializer.SerializeToElement(result, WorkerJsonContext.Default.JsonNode) };
        }
        catch (TaskFailedException ex)
        {
            return new ErrorMessage { Error = new InvocationError { Type = ex.ErrorType, Message = ex.Message, Details = ex.Details }, Retryable = ex.Retryable };
        }
        catch (InvocationFailedException ex)
        {
            return Error(InvocationErrorTypes.DependencyFailed, ex.Message, ex.Error.Details);
        }
        catch (Exception ex)
        {
            return Error(InvocationErrorTypes.TaskError, ex.Message, ex.ToString());
        }
    }

    static ErrorMessage Error(string type, string message, string? details = null) =>
        new() { Error = new InvocationError { Type = type, Message = message, Details = details } };
}
