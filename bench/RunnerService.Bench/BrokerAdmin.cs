using System.Net.Http.Headers;
using System.Text;
using RabbitMQ.Client;
using RabbitMQ.Client.Exceptions;

namespace RunnerService.Bench;

/// <summary>Management API (virtual hosts) and exact queue depths over AMQP.</summary>
sealed class BrokerAdmin : IDisposable
{
    readonly HttpClient _http;
    readonly Uri _amqp;

    public BrokerAdmin(Uri amqp, Uri management)
    {
        _amqp = amqp;
        _http = new HttpClient { BaseAddress = new Uri(management.GetLeftPart(UriPartial.Authority)), Timeout = TimeSpan.FromSeconds(30) };
        var credentials = Uri.UnescapeDataString(management.UserInfo is { Length: > 0 } info ? info : "guest:guest");
        _http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Basic", Convert.ToBase64String(Encoding.UTF8.GetBytes(credentials)));
    }

    /// <summary>PUT /api/vhosts/NAME and full permissions for the AMQP user; returns the vhost's amqp:// URL.</summary>
    public async Task<Uri> CreateVirtualHostAsync(string name)
    {
        (await _http.PutAsync($"api/vhosts/{Uri.EscapeDataString(name)}", null)).EnsureSuccessStatusCode();
        var user = Uri.UnescapeDataString(_amqp.UserInfo.Split(':')[0]);
        using var permissions = new StringContent("{\"configure\":\".*\",\"write\":\".*\",\"read\":\".*\"}", Encoding.UTF8, "application/json");
        (await _http.PutAsync($"api/permissions/{Uri.EscapeDataString(name)}/{Uri.EscapeDataString(user)}", permissions)).EnsureSuccessStatusCode();
        return new UriBuilder(_amqp) { Path = "/" + Uri.EscapeDataString(name) }.Uri;
    }

    public async Task DeleteVirtualHostAsync(string name)
    {
        try
        {
            await _http.DeleteAsync($"api/vhosts/{Uri.EscapeDataString(name)}");
        }
        catch (Exception ex) when (ex is HttpRequestException or TaskCanceledException)
        {
            // Best effort (a cluster missing a node may not answer within the timeout): the broker is a throw-away one.
        }
    }

    /// <summary>Every queue of a virtual host with its consumers, ready and unacknowledged messages (management API).</summary>
    public async Task<IReadOnlyList<(string Name, long Consumers, long Ready, long Unacked)>> QueuesAsync(string vhost)
    {
        using var response = await _http.GetAsync($"api/queues/{Uri.EscapeDataString(vhost)}");
        response.EnsureSuccessStatusCode();
        using var doc = System.Text.Json.JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        static long Number(System.Text.Json.JsonElement q, string name) =>
            q.TryGetProperty(name, out var v) && v.ValueKind == System.Text.Json.JsonValueKind.Number ? v.GetInt64() : 0;
        return [.. doc.RootElement.EnumerateArray().Select(q => (q.GetProperty("name").GetString()!, Number(q, "consumers"), Number(q, "messages_ready"),
            Number(q, "messages_unacknowledged")))];
    }

    /// <summary>Ready messages and consumers of a queue, straight from the broker; null when the queue does not exist.</summary>
    public static async Task<(uint Ready, uint Consumers)?> QueueDepthAsync(Uri vhost, string queue)
    {
        var factory = new ConnectionFactory { Uri = vhost };
        await using var connection = await factory.CreateConnectionAsync();
        await using var channel = await connection.CreateChannelAsync();
        try
        {
            var ok = await channel.QueueDeclarePassiveAsync(queue);
            return (ok.MessageCount, ok.ConsumerCount);
        }
        catch (OperationInterruptedException)
        {
            return null;
        }
    }

    public void Dispose() => _http.Dispose();
}
