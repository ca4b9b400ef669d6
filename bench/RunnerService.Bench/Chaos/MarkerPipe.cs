using System.Runtime.InteropServices;

namespace RunnerService.Bench.Chaos;

/// <summary>
/// Where one replica's <c>marker</c> workers write: a named pipe (FIFO) that this run reads and copies, line by line,
/// into a plain file. The marker task appends with <c>File.AppendAllText</c>, which on Linux opens without
/// <c>O_APPEND</c> and writes at the length it saw (<c>pwrite</c>): concurrent workers appending to one regular file
/// overwrite each other's lines (a first chaos run found <c>… 15tick …</c>, two lines torn into one). A write of a
/// short line to a pipe is atomic (at most PIPE_BUF bytes), so through the FIFO no line is lost or torn.
/// </summary>
sealed partial class MarkerPipe : IDisposable
{
    const string EndOfRun = "#end-of-run";

    readonly FileStream _read;
    readonly Thread _copier;

    public MarkerPipe(string fifoPath, string filePath)
    {
        FifoPath = fifoPath;
        FilePath = filePath;
        File.Delete(fifoPath);
        if (MakeFifo(fifoPath, Convert.ToUInt32("666", 8)) != 0)
            throw new IOException($"mkfifo {fifoPath} failed: errno {Marshal.GetLastPInvokeError()}");
        // Read-write: the open does not wait for a writer, and the pipe never reports end-of-file between workers.
        _read = new FileStream(fifoPath, FileMode.Open, FileAccess.ReadWrite, FileShare.ReadWrite, bufferSize: 0);
        _copier = new Thread(Copy) { IsBackground = true, Name = $"marker pipe {Path.GetFileName(fifoPath)}" };
        _copier.Start();
    }

    /// <summary>The path the workers get as RUNNER_MARKER_FILE.</summary>
    public string FifoPath { get; }

    /// <summary>The copy the history checker reads.</summary>
    public string FilePath { get; }

    [LibraryImport("libc", EntryPoint = "mkfifo", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int MakeFifo(string path, uint mode);

    void Copy()
    {
        using var reader = new StreamReader(_read);
        using var writer = new StreamWriter(FilePath, append: false);
        while (reader.ReadLine() is { } line)
        {
            if (line == EndOfRun)
                break;
            writer.WriteLine(line);
        }
    }

    /// <summary>Copies what is in the pipe so far and stops (every worker is gone by then).</summary>
    public void Dispose()
    {
        if (_copier.IsAlive)
        {
            using (var write = new FileStream(FifoPath, FileMode.Open, FileAccess.Write, FileShare.ReadWrite, bufferSize: 0))
                write.Write(System.Text.Encoding.ASCII.GetBytes(EndOfRun + "\n"));
            _copier.Join(TimeSpan.FromSeconds(30));
        }
        _read.Dispose();
        File.Delete(FifoPath);
    }
}
