using System.Text;
using RunnerService.Contracts.Protocol;

namespace RunnerService.Worker;

/// <summary>The worker's end of the protocol: JSON lines in on stdin, JSON lines out on stdout.</summary>
sealed class WorkerChannel(Stream output, TextReader input)
{
    readonly Lock _writeLock = new();

    public void Send(WorkerMessage message)
    {
        lock (_writeLock)
        {
            WorkerProtocol.WriteDirect(output, message);
            output.Flush();
        }
    }

    /// <summary>Reads the next message from the runner; null when stdin is closed.</summary>
    /// <remarks>Blocks: for the main loop, which has nothing else to do until the next invocation arrives.</remarks>
    public WorkerMessage? Receive() => Decode(input.ReadLine());

    /// <summary>Reads the next message from the runner without blocking the caller; null when stdin is closed.</summary>
    public async ValueTask<WorkerMessage?> ReceiveAsync() => Decode(await input.ReadLineAsync().ConfigureAwait(false));

    static WorkerMessage? Decode(string? line)
    {
        if (line is null)
            return null;
        if (!WorkerProtocol.TryDecodeDirect(Encoding.UTF8.GetBytes(line), out var message, out var error))
            throw new InvalidDataException($"The runner sent a line that is not a protocol message: {error}");
        return message;
    }
}
