using System.Diagnostics.CodeAnalysis;
using System.Text.Json;

namespace RunnerService.Contracts.Protocol;

/// <summary>Encodes and decodes protocol lines. Allocation-light and Native-AOT safe (source-generated JSON).</summary>
public static class WorkerProtocol
{
    /// <summary>The protocol version this build speaks. Bumped only for incompatible changes.</summary>
    public const int Version = 1;

    /// <summary>Serializes one message as a single line (no trailing newline).</summary>
    public static string Encode(WorkerMessage message) =>
        JsonSerializer.Serialize(message, WorkerProtocolJsonContext.Default.WorkerMessage);

    /// <summary>Writes one message as UTF-8 JSON followed by '\n'.</summary>
    public static void Write(Stream stream, WorkerMessage message)
    {
        using (var writer = new Utf8JsonWriter(stream))
        {
            JsonSerializer.Serialize(writer, message, WorkerProtocolJsonContext.Default.WorkerMessage);
        }
        stream.WriteByte((byte)'\n');
    }

    /// <summary>
    /// Parses one line. Returns false with a reason (never throws) for anything that is not a
    /// well-formed message of a known type.
    /// </summary>
    public static bool TryDecode(ReadOnlySpan<byte> line, [NotNullWhen(true)] out WorkerMessage? message, [NotNullWhen(false)] out string? error)
    {
        message = null;
        try
        {
            message = JsonSerializer.Deserialize(line, WorkerProtocolJsonContext.Default.WorkerMessage);
        }
        catch (JsonException ex)
        {
            error = ex.Message;
            return false;
        }
        catch (NotSupportedException ex)
        {
            // Thrown for an unknown or missing "type" discriminator on the abstract base.
            error = ex.Message;
            return false;
        }
        if (message is null)
        {
            error = "the line is JSON null, not a message object";
            return false;
        }
        error = null;
        return true;
    }

    /// <summary>Parses one line given as a string.</summary>
    public static bool TryDecode(string line, [NotNullWhen(true)] out WorkerMessage? message, [NotNullWhen(false)] out string? error) =>
        TryDecode(System.Text.Encoding.UTF8.GetBytes(line), out message, out error);
}
