using System.Diagnostics.CodeAnalysis;
using System.Text;
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

    // ------------------------------------------------------------------------------------------------------------
    // The direct path. Same lines as Write/TryDecode, but through each message type's own JSON metadata instead of
    // the polymorphic base: building the polymorphic metadata (reading the [JsonDerivedType] attributes) was a
    // quarter of a Native AOT worker's CPU per invocation, paid once per process, i.e. once per invocation.

    /// <summary>Writes one message as UTF-8 JSON followed by '\n', without the polymorphic metadata.</summary>
    public static void WriteDirect(Stream stream, WorkerMessage message)
    {
        var body = new System.Buffers.ArrayBufferWriter<byte>(256);
        using (var writer = new Utf8JsonWriter(body))
        {
            var context = WorkerProtocolJsonContext.Default;
            switch (message)
            {
                case ResultMessage m: JsonSerializer.Serialize(writer, m, context.ResultMessage); break;
                case ErrorMessage m: JsonSerializer.Serialize(writer, m, context.ErrorMessage); break;
                case HelloMessage m: JsonSerializer.Serialize(writer, m, context.HelloMessage); break;
                case InvokeMessage m: JsonSerializer.Serialize(writer, m, context.InvokeMessage); break;
                case WaitMessage m: JsonSerializer.Serialize(writer, m, context.WaitMessage); break;
                case LogMessage m: JsonSerializer.Serialize(writer, m, context.LogMessage); break;
                case ProgressMessage m: JsonSerializer.Serialize(writer, m, context.ProgressMessage); break;
                case StartInvocationMessage m: JsonSerializer.Serialize(writer, m, context.StartInvocationMessage); break;
                case ResumeMessage m: JsonSerializer.Serialize(writer, m, context.ResumeMessage); break;
                default: throw new ArgumentException($"unknown message type {message.GetType().Name}", nameof(message));
            }
        }
        // body is {...}: the line is {"type":"<name>" then the body's members, written in one piece (one write).
        var written = body.WrittenSpan;
        var line = new System.Buffers.ArrayBufferWriter<byte>(written.Length + 32);
        System.Buffers.BuffersExtensions.Write(line, "{\"type\":\""u8);
        System.Buffers.BuffersExtensions.Write(line, Encoding.UTF8.GetBytes(TypeName(message)));
        System.Buffers.BuffersExtensions.Write(line, written.Length > 2 ? "\","u8 : "\""u8);
        System.Buffers.BuffersExtensions.Write(line, written[1..]);
        System.Buffers.BuffersExtensions.Write(line, "\n"u8);
        stream.Write(line.WrittenSpan);
    }

    /// <summary>The <c>type</c> discriminator of a message.</summary>
    public static string TypeName(WorkerMessage message) => message switch
    {
        StartInvocationMessage => "invocation",
        ResumeMessage => "resume",
        HelloMessage => "hello",
        LogMessage => "log",
        ProgressMessage => "progress",
        InvokeMessage => "invoke",
        WaitMessage => "wait",
        ResultMessage => "result",
        ErrorMessage => "error",
        _ => throw new ArgumentException($"unknown message type {message.GetType().Name}", nameof(message)),
    };

    /// <summary>Parses one line like <see cref="TryDecode(ReadOnlySpan{byte}, out WorkerMessage?, out string?)"/>, without the polymorphic metadata.</summary>
    public static bool TryDecodeDirect(ReadOnlySpan<byte> line, [NotNullWhen(true)] out WorkerMessage? message, [NotNullWhen(false)] out string? error)
    {
        message = null;
        try
        {
            var type = ReadTypeProperty(line);
            var context = WorkerProtocolJsonContext.Default;
            message = type switch
            {
                "invocation" => JsonSerializer.Deserialize(line, context.StartInvocationMessage),
                "resume" => JsonSerializer.Deserialize(line, context.ResumeMessage),
                "hello" => JsonSerializer.Deserialize(line, context.HelloMessage),
                "log" => JsonSerializer.Deserialize(line, context.LogMessage),
                "progress" => JsonSerializer.Deserialize(line, context.ProgressMessage),
                "invoke" => JsonSerializer.Deserialize(line, context.InvokeMessage),
                "wait" => JsonSerializer.Deserialize(line, context.WaitMessage),
                "result" => JsonSerializer.Deserialize(line, context.ResultMessage),
                "error" => JsonSerializer.Deserialize(line, context.ErrorMessage),
                null => throw new JsonException("the message has no 'type' property"),
                _ => throw new JsonException($"unknown message type '{type}'"),
            };
        }
        catch (JsonException ex)
        {
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

    /// <summary>The top-level <c>type</c> string of a JSON object line, wherever it stands; null when absent.</summary>
    static string? ReadTypeProperty(ReadOnlySpan<byte> line)
    {
        var reader = new Utf8JsonReader(line);
        if (!reader.Read())
            throw new JsonException("the line is empty");
        if (reader.TokenType == JsonTokenType.Null)
            throw new JsonException("the line is JSON null, not a message object");
        if (reader.TokenType != JsonTokenType.StartObject)
            throw new JsonException($"the line is a JSON {reader.TokenType}, not a message object");
        while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
        {
            var isType = reader.ValueTextEquals("type"u8);
            if (!reader.Read())
                break;
            if (isType)
                return reader.TokenType == JsonTokenType.String ? reader.GetString() : throw new JsonException("'type' is not a string");
            reader.Skip();
        }
        return null;
    }
}
