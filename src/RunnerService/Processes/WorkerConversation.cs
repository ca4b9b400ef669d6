using System.Text;
using RunnerService.Contracts;
using RunnerService.Contracts.Protocol;

namespace RunnerService.Processes;

/// <summary>
/// The protocol on a worker's stdin and stdout: turns stdout lines into <see cref="WorkerEvent"/>s (every rule about
/// what a worker may write lives here) and writes runner messages to stdin without ever blocking on the pipe.
/// Works on any pair of streams, so it is unit-tested over in-memory pipes.
/// </summary>
sealed class WorkerConversation
{
    readonly LineReader _stdout;
    readonly SemaphoreSlim _writing = new(1, 1);
    Stream _stdin;

    public WorkerConversation(Stream stdin, Stream stdout, int maxLineBytes)
    {
        _stdin = stdin;
        _stdout = new LineReader(stdout, maxLineBytes);
    }

    public int MaxLineBytes => _stdout.MaxLineBytes;

    /// <summary>How long reads that start after their deadline may still take, all together.</summary>
    public static readonly TimeSpan LateReadGrace = TimeSpan.FromSeconds(1);

    CancellationTokenSource? _late;

    /// <summary>Goes on over new streams of the same pipes (reopened after a pause).</summary>
    public void Rebind(Stream stdin, Stream stdout)
    {
        _stdin = stdin;
        _stdout.Rebind(stdout);
    }

    /// <summary>
    /// The next event on stdout. <paramref name="abandon"/> ends a read that the worker's exit left open. A deadline
    /// that passed before the runner came to read (busy publishing, say) must not cost what the worker wrote before it
    /// exited: reads that start after it get one late window of <see cref="LateReadGrace"/>, shared by all of them.
    /// </summary>
    public async ValueTask<WorkerEvent> ReadAsync(CancellationToken abandon)
    {
        if (abandon.IsCancellationRequested)
        {
            _late ??= new CancellationTokenSource(LateReadGrace);
            abandon = _late.Token;
        }
        while (true)
        {
            LineReadResult read;
            try
            {
                read = await _stdout.ReadLineAsync(abandon).ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is OperationCanceledException or IOException or ObjectDisposedException)
            {
                return new WorkerEvent.Closed(null);
            }
            switch (read.Kind)
            {
                case LineReadKind.EndOfStream:
                    return new WorkerEvent.Closed(null);
                case LineReadKind.PartialLineAtEnd:
                    return new WorkerEvent.Closed(Preview(read.Bytes.Span));
                case LineReadKind.TooLong:
                    var head = Preview(read.Bytes.Span);
                    return head.Contains("\"type\":\"result\"", StringComparison.Ordinal)
                        ? new WorkerEvent.Violation(InvocationErrorTypes.ResultTooLarge,
                            $"the result is larger than the limit of {MaxLineBytes} bytes (Runner:MaxMessageBytes)")
                        : new WorkerEvent.Violation(InvocationErrorTypes.ProtocolViolation,
                            $"the worker wrote a line longer than the limit of {MaxLineBytes} bytes, starting '{head}'");
            }
            if (read.Bytes.Length == 0)
                continue;
            return Check(read.Bytes.Span);
        }
    }

    /// <summary>Decodes one line and applies the rules about what a worker may send.</summary>
    static WorkerEvent Check(ReadOnlySpan<byte> line)
    {
        if (!WorkerProtocol.TryDecode(line, out var message, out var error))
            return Violation($"the worker wrote a line that is not a protocol message: '{Preview(line)}'", error);
        return message switch
        {
            HelloMessage hello when hello.Protocol != WorkerProtocol.Version =>
                Violation($"the worker speaks protocol version {hello.Protocol}; this runner speaks {WorkerProtocol.Version}"),
            WaitMessage { InvocationIds: null } => Violation($"the worker sent a 'wait' without 'invocationIds': '{Preview(line)}'"),
            ErrorMessage { Error: null } => Violation($"the worker sent an 'error' without an 'error' object: '{Preview(line)}'"),
            HelloMessage or LogMessage or ProgressMessage or InvokeMessage or WaitMessage or ResultMessage or ErrorMessage =>
                new WorkerEvent.Received(message),
            _ => Violation($"the worker sent '{Preview(line)}', a message only the runner may send"),
        };
    }

    static WorkerEvent.Violation Violation(string message, string? details = null) =>
        new(InvocationErrorTypes.ProtocolViolation, message, details);

    /// <summary>
    /// Writes one message to stdin within <paramref name="deadline"/>. The write never blocks a thread: a worker that
    /// does not read (stopped, busy, or ignoring stdin) only makes it wait, up to the deadline.
    /// </summary>
    public async Task<SendResult> SendAsync(WorkerMessage message, TimeSpan deadline)
    {
        var bytes = Encoding.UTF8.GetBytes(WorkerProtocol.Encode(message) + "\n");
        using var timeout = new CancellationTokenSource(deadline);
        try
        {
            await _writing.WaitAsync(timeout.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            return SendResult.Stalled;
        }
        try
        {
            await _stdin.WriteAsync(bytes, timeout.Token).ConfigureAwait(false);
            await _stdin.FlushAsync(timeout.Token).ConfigureAwait(false);
            return SendResult.Delivered;
        }
        catch (OperationCanceledException)
        {
            return SendResult.Stalled;
        }
        catch (Exception ex) when (ex is IOException or ObjectDisposedException)
        {
            return SendResult.WorkerGone; // its exit is reported by the stdout read
        }
        finally
        {
            _writing.Release();
        }
    }

    internal static string Preview(ReadOnlySpan<byte> bytes)
    {
        var head = bytes[..Math.Min(bytes.Length, 120)];
        var text = Encoding.UTF8.GetString(head);
        return bytes.Length > head.Length ? text + "…" : text;
    }
}

enum SendResult
{
    Delivered,

    /// <summary>The worker did not take the message within the deadline.</summary>
    Stalled,

    /// <summary>The pipe is closed: the worker has exited or closed its stdin.</summary>
    WorkerGone,
}
