using MassTransit;
using Microsoft.Extensions.Configuration;

namespace RunnerService.Hosting;

/// <summary>
/// <c>ConnectionStrings:RabbitMq</c>, shared by the service and the CLI: one <c>amqp://</c> URL, or several separated by
/// commas for the nodes of one RabbitMQ cluster (same scheme, user, password and virtual host; only host and port
/// differ). The first node is tried first; after a lost connection MassTransit tries the next one, round the list.
/// </summary>
sealed partial class BrokerConnection
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

    /// <summary>Every node as <c>host:port</c> (default port filled in), in the order given.</summary>
    public IEnumerable<string> Endpoints => Nodes.Select(n => $"{n.Host}:{PortOf(n)}");

    public static BrokerConnection Resolve(IConfiguration configuration) => Parse(configuration.GetConnectionString(Name));

    public static BrokerConnection Parse(string? value)
    {
        if (string.IsNullOrWhiteSpace(value))
            value = LocalDefault;
        var nodes = new List<Uri>();
        // Split only where a new URL begins: a comma may also appear in a password.
        foreach (var part in NodeSeparator().Split(value).Select(p => p.Trim()).Where(p => p.Length > 0))
        {
            // A second "://" is another URL of a scheme that is no node's (http://, ...), not part of this one.
            if (!Uri.TryCreate(part, UriKind.Absolute, out var uri) || uri.Scheme is not ("amqp" or "amqps" or "rabbitmq" or "rabbitmqs")
                || part.IndexOf("://", StringComparison.Ordinal) != part.LastIndexOf("://", StringComparison.Ordinal))
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
                    foreach (var endpoint in Endpoints)
                        cluster.Node(endpoint);
                });
        });

    public static int PortOf(Uri node) =>
        node.IsDefaultPort || node.Port < 0 ? (node.Scheme.EndsWith('s') ? 5671 : 5672) : node.Port;

    static bool SameCluster(Uri a, Uri b) =>
        a.Scheme == b.Scheme && a.UserInfo == b.UserInfo && a.AbsolutePath == b.AbsolutePath;

    /// <summary>The text with everything between <c>user:</c> and the last <c>@</c> of its authority blanked, parsable or not.</summary>
    static string Redact(string url)
    {
        var start = url.IndexOf("://", StringComparison.Ordinal);
        if (start < 0)
            return url;
        start += 3;
        var authorityEnd = url.IndexOf('/', start);
        var at = url.LastIndexOf('@', authorityEnd < 0 ? url.Length - 1 : authorityEnd);
        if (at < start)
            return url;
        var colon = url.IndexOf(':', start, at - start);
        return colon < 0 ? url : url[..(colon + 1)] + "***" + url[at..];
    }

    [System.Text.RegularExpressions.GeneratedRegex(@",(?=\s*(?:amqps?|rabbitmqs?)://)", System.Text.RegularExpressions.RegexOptions.IgnoreCase)]
    private static partial System.Text.RegularExpressions.Regex NodeSeparator();
}
