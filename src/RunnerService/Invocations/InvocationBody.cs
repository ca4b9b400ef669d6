using System.Net.Mime;
using System.Text.Json;
using RunnerService.Contracts;

namespace RunnerService.Invocations;

/// <summary>
/// Reads what it can from a body on the invocation queue that did not make a valid <see cref="RunInvocation"/>, so
/// its publisher still gets a completion: the id (and task name and parent) from either form, the raw
/// <c>application/json</c> object or a MassTransit envelope's <c>message</c>, whatever the case of the names.
/// </summary>
static class InvocationBody
{
    public const string RawContentType = "application/json";

    /// <summary>The fields a rejection's completion carries, or null when no invocation id can be read.</summary>
    public static RunInvocation? TryReadIdentity(ReadOnlySpan<byte> body, ContentType? contentType)
    {
        if (TryParse(body) is not { } root || root.ValueKind != JsonValueKind.Object)
            return null;
        var invocation = root;
        string? responseAddress = null;
        if (!IsRaw(contentType) && TryGetProperty(root, "message", out var message) && message.ValueKind == JsonValueKind.Object)
        {
            invocation = message;
            responseAddress = TryGetString(root, "responseAddress");
        }
        if (!TryGetGuid(invocation, "invocationId", out var id) || id == Guid.Empty)
            return null;
        return new RunInvocation
        {
            InvocationId = id,
            TaskName = TryGetString(invocation, "taskName") ?? "",
            ParentInvocationId = TryGetGuid(invocation, "parentInvocationId", out var parent) ? parent : null,
            ReplyTo = TryGetString(invocation, "replyTo") is { Length: > 0 } replyTo ? replyTo : responseAddress,
        };
    }

    /// <summary>Why a body could not be deserialized at all (MassTransit's own message says little to a publisher).</summary>
    public static string DescribeUnreadable(ReadOnlySpan<byte> body, ContentType? contentType, Exception error)
    {
        var described = contentType?.MediaType is { Length: > 0 } mediaType ? $"content type {mediaType}" : "no content type";
        JsonElement root;
        try
        {
            root = JsonDocument.Parse(body.ToArray()).RootElement;
        }
        catch (JsonException ex)
        {
            return $"the body is not JSON ({described}): {ex.Message}";
        }
        if (IsRaw(contentType))
            return $"the body is not a RunInvocation ({described}): {(error.GetBaseException() ?? error).Message}";
        if (root.ValueKind != JsonValueKind.Object || !TryGetProperty(root, "message", out _))
            return $"the body is not a MassTransit envelope ({described}, no \"message\"): a raw RunInvocation must be sent with content type {RawContentType}";
        return $"the MassTransit envelope could not be read ({described}): {(error.GetBaseException() ?? error).Message}";
    }

    /// <summary>A JSON error with the field it is about (a converter's own message does not carry the path).</summary>
    public static string DescribeJsonError(JsonException error) =>
        error.Path is { Length: > 0 } path && !error.Message.Contains(path, StringComparison.Ordinal) ? $"{error.Message} (at {path})" : error.Message;

    static bool IsRaw(ContentType? contentType) =>
        string.Equals(contentType?.MediaType, RawContentType, StringComparison.OrdinalIgnoreCase);

    static JsonElement? TryParse(ReadOnlySpan<byte> body)
    {
        try
        {
            return JsonDocument.Parse(body.ToArray()).RootElement;
        }
        catch (JsonException)
        {
            return null;
        }
    }

    static bool TryGetGuid(JsonElement value, string name, out Guid guid)
    {
        guid = Guid.Empty;
        return TryGetProperty(value, name, out var property) && property.ValueKind == JsonValueKind.String && Guid.TryParse(property.GetString(), out guid);
    }

    static string? TryGetString(JsonElement value, string name) =>
        TryGetProperty(value, name, out var property) && property.ValueKind == JsonValueKind.String ? property.GetString() : null;

    static bool TryGetProperty(JsonElement value, string name, out JsonElement property)
    {
        foreach (var candidate in value.EnumerateObject())
        {
            if (string.Equals(candidate.Name, name, StringComparison.OrdinalIgnoreCase))
            {
                property = candidate.Value;
                return true;
            }
        }
        property = default;
        return false;
    }
}
