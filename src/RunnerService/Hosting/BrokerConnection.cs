using MassTransit;
using Microsoft.Extensions.Configuration;

namespace RunnerService.Hosting;

/// <summary>
/// <c>ConnectionStrings:RabbitMq</c>, shared by the service and the CLI: one <c>amqp://</c> URL, or several separated by
/// commas for the nodes of one RabbitMQ cluster (same scheme, user, password and virtual host; only host and port
/// differ). The first node is tried first; after a lost connection MassTransit tries the next one, round the list.
/// </summary>
sealed class BrokerConnection
{
    public const string Name = "RabbitMq";

    /// <summary>The private broker that deploy/local/rabbitmq.sh starts.</summary>
    public const string LocalDefault = "amqp://guest:guest@127.0.0.1:5682/";

    BrokerConnection(IReadOnlyList<Uri> nodes) => Nodes = nodes;

    /// <summary>Every node's URL, in the order given.</summary>
    public IReadOnlyList<Uri> Nodes { get; }

    /// <summary>The first node: MassTransit's host address, and the first one connected to.</summary>
    public Uri Primary => Nodes[0];

    public bool IsCluster => Nodes.Count > 1;

    public static BrokerConnection Resolve(IConfiguration configuration) => Parse(configuration.GetConnectionString(Name));

    public static BrokerConnection Parse(string? value)
    {
        if (string.IsNullOrWhiteSpace(value))
            value = LocalDefault;
        var nodes = new List<Uri>();
        foreach (var part in value.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries))
        {
            if (!Uri.TryCreate(part, UriKind.Absolute, out var uri) || uri.Scheme is not ("amqp" or "amqps" or "rabbitmq" or "rabbitmqs"))
                throw new InvalidOperationException($"ConnectionStrings:RabbitMq must be an amqp:// URL, or several separated by commas, got '{Redact(part)}'.");
            if (nodes.Count > 0 && !SameCluster(nodes[0], uri))
                throw new InvalidOperationException(
                    $"ConnectionStrings:RabbitMq lists several nodes that differ in more than host and port: '{Redact(nodes[0].ToString())}' and '{Redact(part)}'. "
                    + "The nodes of one cluster share the scheme, user, password and virtual host.");
            nodes.Add(uri);
        }
        if (nodes.Count == 0)
            throw new InvalidOperationException("ConnectionStrings:RabbitMq has no URL.");
        return new BrokerConnection(nodes);
    }

    /// <summary>Points the bus at the broker: one host, or the cluster's nodes in the order given.</summary>
    public void Configure(IRabbitMqBusFactoryConfigurator configurator) =>
        configurator.Host(Primary, host =>
        {
            if (IsCluster)
                host.UseCluster(cluster =>
                {
                    foreach (var node in Nodes)
                        cluster.Node($"{node.Host}:{PortOf(node)}");
                });
        });

    public static int PortOf(Uri node) =>
        node.IsDefaultPort || node.Port < 0 ? (node.Scheme.EndsWith('s') ? 5671 : 5672) : node.Port;

    static bool SameCluster(Uri a, Uri b) =>
        a.Scheme == b.Scheme && a.UserInfo == b.UserInfo && a.AbsolutePath == b.AbsolutePath;

    static string Redact(string url) =>
        Uri.TryCreate(url, UriKind.Absolute, out var uri) && uri.UserInfo.Contains(':')
            ? url.Replace(uri.UserInfo, uri.UserInfo.Split(':', 2)[0] + ":***", StringComparison.Ordinal)
            : url;
}
