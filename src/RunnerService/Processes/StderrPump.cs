using System.Text;
using Microsoft.Extensions.Logging;

namespace RunnerService.Processes;

/// <summary>
/// Reads a worker's stderr line by line into the service's log, under the invocation the worker runs now. Lines have
/// the same limit as protocol lines: a longer one is logged cut and marked, never buffered whole.
/// </summary>
sealed class StderrPump
{
    readonly WorkerProcess _worker;
    readonly Stream _stream;
    readonly LineReader _reader;
    readonly ILogger _logger;
    readonly CancellationTokenSource _stop;

    public StderrPump(WorkerProcess worker, Stream stream, int maxLineBytes, ILogger logger, CancellationToken outputDeadline)
    {
        _worker = worker;
        _stream = stream;
        _reader = new LineReader(stream, maxLineBytes);
        _logger = logger;
        _stop = CancellationTokenSource.CreateLinkedTokenSource(outputDeadline);
        Completion = Task.Run(PumpAsync);
    }

    /// <summary>Completes when the pipe has ended (or was abandoned) and its descriptor is closed.</summary>
    public Task Completion { get; }

    /// <summary>Stops reading and closes this side of the pipe; what the worker writes meanwhile stays in the pipe.</summary>
    public void Stop()
    {
        try
        {
            _stop.Cancel();
        }
        catch (ObjectDisposedException)
        {
        }
    }

    async Task PumpAsync()
    {
        try
        {
            while (true)
            {
                var read = await _reader.ReadLineAsync(_stop.Token).ConfigureAwait(false);
                switch (read.Kind)
                {
                    case LineReadKind.Line:
                        Log(Encoding.UTF8.GetString(read.Bytes.Span));
                        break;
                    case LineReadKind.TooLong:
                        Log($"{Encoding.UTF8.GetString(read.Bytes.Span)}… [line cut: longer than {_reader.MaxLineBytes} bytes]");
                        break;
                    case LineReadKind.PartialLineAtEnd:
                        Log(Encoding.UTF8.GetString(read.Bytes.Span));
                        return;
                    default:
                        return;
                }
            }
        }
        catch (OperationCanceledException)
        {
        }
        catch (IOException)
        {
        }
        catch (ObjectDisposedException)
        {
        }
        finally
        {
            _stream.Dispose();
            _stop.Dispose();
        }
    }

    void Log(string line)
    {
        if (_worker.Current is { } current)
            WorkerLog.WorkerStderr(_logger, current.InvocationId, current.Invocation.TaskName, _worker.Pid, line);
        else
            WorkerLog.IdleWorkerStderr(_logger, _worker.Pid, line);
    }
}
