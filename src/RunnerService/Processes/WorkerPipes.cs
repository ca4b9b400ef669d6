using System.Diagnostics;

namespace RunnerService.Processes;

/// <summary>
/// One worker process and its protocol pipes, for its whole life. Normally that life is one invocation; with
/// <c>Runner:MaxInvocationsPerProcess</c> above 1 a worker that said it can (<c>hello.reusable</c>) runs several,
/// one after another, each in its own <see cref="WorkerSession"/>.
/// </summary>
sealed class WorkerPipes
{
    public WorkerPipes(Process process, int maxMessageBytes)
    {
        Process = process;
        Pid = process.Id;
        Stdout = new LineReader(process.StandardOutput.BaseStream, maxMessageBytes);
        Stdin = process.StandardInput.BaseStream;
        Exited = WatchExitAsync();
    }

    async Task WatchExitAsync()
    {
        await Process.WaitForExitAsync().ConfigureAwait(false);
        ExitCode = Process.ExitCode;
    }

    public Process Process { get; }
    public int Pid { get; }
    public LineReader Stdout { get; }
    public Stream Stdin { get; }
    public Task Exited { get; }

    /// <summary>The exit status once <see cref="Exited"/> completed (128+N for death by signal N).</summary>
    public int ExitCode { get; private set; }

    /// <summary>The worker said in its hello that it can run another invocation after a result.</summary>
    public bool Reusable { get; set; }

    /// <summary>Invocations handed to this process so far.</summary>
    public int Runs { get; set; }

    /// <summary>The session that owns the process now (its stderr lines are logged under that invocation).</summary>
    public WorkerSession? Current { get; set; }

    public void Kill()
    {
        try
        {
            if (!Exited.IsCompleted)
                Process.Kill();
        }
        catch (InvalidOperationException)
        {
            // already exited
        }
        catch (System.ComponentModel.Win32Exception)
        {
            // exited between the check and the kill
        }
    }

    /// <summary>Closes stdin: an idle worker takes it as the end of its work and exits.</summary>
    public void CloseStdin()
    {
        try
        {
            Stdin.Dispose();
        }
        catch (IOException)
        {
        }
    }
}
