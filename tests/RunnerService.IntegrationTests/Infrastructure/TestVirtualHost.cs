namespace RunnerService.IntegrationTests.Infrastructure;

/// <summary>A virtual host of the shared broker, deleted with everything in it when the test ends.</summary>
public sealed class TestVirtualHost(string name, Uri amqpUri, BrokerFixture? broker) : IAsyncDisposable
{
    public string Name { get; } = name;

    /// <summary>amqp:// URL of this virtual host, for ConnectionStrings__RabbitMq.</summary>
    public Uri AmqpUri { get; } = amqpUri;

    public ValueTask DisposeAsync() => broker is null ? ValueTask.CompletedTask : new(broker.DeleteVirtualHostAsync(Name));
}
