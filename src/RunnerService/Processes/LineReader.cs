namespace RunnerService.Processes;

/// <summary>
/// Reads '\n'-terminated lines from a worker's stdout with a hard length limit, so a worker that writes
/// an endless line cannot make the runner buffer without bound.
/// </summary>
sealed class LineReader(Stream stream, int maxLineBytes)
{
    // Starts small (a paused worker keeps its reader): most lines are short, and the buffer grows on demand.
    byte[] _buffer = new byte[Math.Min(4 * 1024, maxLineBytes + 1)];
    int _start;
    int _end;

    public int MaxLineBytes => maxLineBytes;

    public async ValueTask<LineReadResult> ReadLineAsync(CancellationToken cancellationToken)
    {
        var scanFrom = _start;
        while (true)
        {
            var newline = Array.IndexOf(_buffer, (byte)'\n', scanFrom, _end - scanFrom);
            if (newline >= 0)
            {
                var line = new ReadOnlyMemory<byte>(_buffer, _start, newline - _start);
                _start = newline + 1;
                if (line.Length > maxLineBytes)
                    return LineReadResult.TooLong(line[..Math.Min(line.Length, 256)].ToArray(), line.Length);
                return LineReadResult.Line(line);
            }
            var scanned = _end - _start;
            if (scanned > maxLineBytes)
                return LineReadResult.TooLong(_buffer.AsSpan(_start, 256).ToArray(), scanned);
            MakeRoom();
            scanFrom = _start + scanned; // MakeRoom may have moved the pending bytes
            var read = await stream.ReadAsync(_buffer.AsMemory(_end), cancellationToken).ConfigureAwait(false);
            if (read == 0)
            {
                return _end > _start
                    ? LineReadResult.Partial(_buffer.AsSpan(_start, Math.Min(_end - _start, 256)).ToArray())
                    : LineReadResult.EndOfStream;
            }
            _end += read;
        }
    }

    void MakeRoom()
    {
        if (_end < _buffer.Length)
            return;
        var pending = _end - _start;
        if (_start > 0 && pending < _buffer.Length / 2)
        {
            Buffer.BlockCopy(_buffer, _start, _buffer, 0, pending);
        }
        else
        {
            var bigger = new byte[Math.Min(Math.Max(_buffer.Length * 2, 1024), maxLineBytes + 2)];
            if (bigger.Length <= pending)
                bigger = new byte[pending + 1024];
            Buffer.BlockCopy(_buffer, _start, bigger, 0, pending);
            _buffer = bigger;
        }
        _start = 0;
        _end = pending;
    }
}

readonly record struct LineReadResult(LineReadKind Kind, ReadOnlyMemory<byte> Bytes, int Length)
{
    public static readonly LineReadResult EndOfStream = new(LineReadKind.EndOfStream, default, 0);
    public static LineReadResult Line(ReadOnlyMemory<byte> bytes) => new(LineReadKind.Line, bytes, bytes.Length);
    public static LineReadResult TooLong(byte[] head, int length) => new(LineReadKind.TooLong, head, length);
    public static LineReadResult Partial(byte[] head) => new(LineReadKind.PartialLineAtEnd, head, head.Length);
}

enum LineReadKind
{
    Line,
    EndOfStream,

    /// <summary>The line passed the limit; <see cref="LineReadResult.Bytes"/> holds its first bytes.</summary>
    TooLong,

    /// <summary>The stream ended in the middle of a line.</summary>
    PartialLineAtEnd,
}
