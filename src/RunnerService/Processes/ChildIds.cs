using System.Security.Cryptography;
using System.Text;
using System.Text.Json;

namespace RunnerService.Processes;

/// <summary>
/// The id of a sub-invocation is the runner's, not the task's: derived from the parent's id, the child's position
/// among the parent's sub-invocations, its task name and its arguments. A parent that runs again (a retry, a reroute)
/// and asks for the same task with the same arguments at the same position gets the same child, so the finished part
/// of its subtree is not run again. A different task or other arguments at that position give a different id.
/// </summary>
static class ChildIds
{
    public static Guid Derive(Guid parent, int position, string taskName, JsonElement? arguments)
    {
        var text = $"{parent:N}/{position}/{taskName}/{(arguments is { } a ? a.GetRawText() : "")}";
        Span<byte> hash = stackalloc byte[32];
        SHA256.HashData(Encoding.UTF8.GetBytes(text), hash);
        // RFC 9562 version 8 (custom): the hash, with the version and variant bits set.
        hash[6] = (byte)((hash[6] & 0x0F) | 0x80);
        hash[8] = (byte)((hash[8] & 0x3F) | 0x80);
        return new Guid(hash[..16], bigEndian: true);
    }
}
