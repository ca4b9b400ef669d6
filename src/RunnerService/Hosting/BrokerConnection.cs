using Microsoft.Extensions.Configuration;

namespace RunnerService.Hosting;

/// <summary>Reads <c>ConnectionStrings:RabbitMq</c>, shared by the service and the CLI.</summary>
static class BrokerConnection
{
    public const string Name = "RabbitMq";

    /// <summary>The private broker that deploy/local/rabbitmq.sh starts.</summary>
    public const string LocalDefault = "amqp://guest:guest@127.0.0.1:5682/";

    public static Uri Resolve(IConfiguration configuration)
    {
        var value = configuration.GetConnectionString(Name);
        if (string.IsNullOrWhiteSpace(value))
            value = LocalDefault;
        if (!Uri.TryCreate(value, UriKind.Absolute, out var uri) || uri.Scheme is not ("amqp" or "amqps" or "rabbitmq" or "rabbitmqs"))
            throw new InvalidOperationException($"ConnectionStrings:RabbitMq must be an amqp:// URL, got '{value}'.");
        return uri;
    }
}
