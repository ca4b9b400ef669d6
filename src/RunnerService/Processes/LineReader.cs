namespace RunnerService.Processes;

/// <summary>
/// Reads '\n'-terminated lines from a worker's stdout or stderr with a hard length limit, so a worker that writes
/// an endless line cannot make the runner buffer without bound. After a line reported as too long, the next read
/// starts after that line's end.
/// </summary>
sealed class LineReader(Stream stream, int maxLineBytes)
{
    const int InitialBuffer = 4 * 1024;
    const int HeadBytes = 4 * 1024;

    // Starts small (a paused worker keeps its reader): most lines are short, and the buffer grows on demand.
    byte[] _buffer = new byte[Math.Min(InitialBuffer, maxLineBytes + 1)];
    int _start;
    int _end;
    bool _skipping;
    Stream _stream = stream;

    public int MaxLineBytes => maxLineBytes;

    /// <summary>Reads on from another stream of the same pipe (reopened after a pause); buffered bytes are kept.</summary>
    public void Rebind(Stream other) => _stream = other;

    public async ValueTask<LineReadResult> ReadLineAsync(CancellationToken cancellationToken)
    {
        var scanFrom = _start;
        while (true)
        {
            if (_skipping)
            {
                // The rest of an over-long line: dropped as it arrives, up to its newline.
                var end = Array.IndexOf(_buffer, (byte)'\n', _start, _end - _start);
                if (end < 0)
                {
                    _start = _end = 0;
                }
                else
                {
                    _start = end + 1;
                    _skipping = false;
                    if (_buffer.Length > InitialBuffer && _end - _start < InitialBuffer)
                    {
                        var smaller = new byte[InitialBuffer];
                        Buffer.BlockCopy(_buffer, _start, smaller, 0, _end - _start);
                        _end -= _start;
                        _start = 0;
                        _buffer = smaller;
                    }
                    scanFrom = _start;
                    continue;
                }
                var got = await _stream.ReadAsync(_buffer.AsMemory(), cancellationToken).ConfigureAwait(false);
                if (got == 0)
                    return LineReadResult.EndOfStream;
                _end = got;
                continue;
            }
            var newline = Array.IndexOf(_buffer, (byte)'\n', scanFrom, _end - scanFrom);
            if (newline >= 0)
            {
                var line = new ReadOnlyMemory<byte>(_buffer, _start, newline - _start);
                _start = newline + 1;
                if (line.Length > maxLineBytes)
                    return LineReadResult.TooLong(line[..Math.Min(line.Length, HeadBytes)].ToArray(), line.Length);
                return LineReadResult.Line(line);
            }
            var scanned = _end - _start;
            if (scanned > maxLineBytes)
            {
                var head = _buffer.AsSpan(_start, Math.Min(scanned, HeadBytes)).ToArray();
                _start = _end;
                _skipping = true;
                return LineReadResult.TooLong(head, scanned);
            }
            MakeRoom();
            scanFrom = _start + scanned; // MakeRoom may have moved the pending bytes
            var read = await _stream.ReadAsync(_buffer.AsMemory(_end), cancellationToken).ConfigureAwait(false);
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
