using RunnerService.Hosting;

namespace RunnerService.Tests;

[Trait("Category", "Unit")]
public class BrokerConnectionTests
{
    [Fact]
    public void One_url_is_one_node_and_keeps_classic_queues_by_default()
    {
        var broker = BrokerConnection.Parse("amqp://guest:guest@127.0.0.1:5682/");
        Assert.False(broker.IsCluster);
        Assert.Equal(new Uri("amqp://guest:guest@127.0.0.1:5682/"), broker.Primary);
        Assert.False(new RunnerOptions().UsesQuorumQueues(broker));
        Assert.True(new RunnerOptions { QuorumQueues = true }.UsesQuorumQueues(broker));
    }

    [Fact]
    public void Several_urls_are_the_nodes_of_one_cluster_in_the_order_given_and_choose_quorum_queues()
    {
        var broker = BrokerConnection.Parse(" amqp://runner:pw@10.0.0.2:5672/prod , amqp://runner:pw@10.0.0.1:5673/prod,amqp://runner:pw@rabbit-3/prod ");
        Assert.True(broker.IsCluster);
        Assert.Equal(["10.0.0.2:5672", "10.0.0.1:5673", "rabbit-3:5672"], broker.Nodes.Select(n => $"{n.Host}:{BrokerConnection.PortOf(n)}"));
        Assert.Equal("10.0.0.2", broker.Primary.Host);
        Assert.True(new RunnerOptions().UsesQuorumQueues(broker));
        Assert.False(new RunnerOptions { QuorumQueues = false }.UsesQuorumQueues(broker));
        Assert.Equal("runner@10.0.0.2:5672,10.0.0.1:5673,rabbit-3:5672/prod", EffectiveSettings.DescribeBroker(broker));
    }

    [Theory]
    [InlineData("amqp://a:pw@h1/v1,amqp://a:pw@h2/v2")]
    [InlineData("amqp://a:pw@h1/,amqp://b:pw@h2/")]
    [InlineData("amqp://a:pw@h1/,amqps://a:pw@h2/")]
    public void Nodes_that_differ_in_more_than_host_and_port_are_refused_without_showing_the_password(string value)
    {
        var error = Assert.Throws<InvalidOperationException>(() => BrokerConnection.Parse(value));
        Assert.Contains("differ in more than host and port", error.Message, StringComparison.Ordinal);
        Assert.DoesNotContain("pw", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_comma_in_a_password_is_part_of_the_password()
    {
        var broker = BrokerConnection.Parse("amqp://runner:se,cret@h1:5672/prod,amqp://runner:se,cret@h2:5672/prod");
        Assert.Equal(["h1", "h2"], broker.Nodes.Select(n => n.Host));
        Assert.Equal("runner:se,cret", broker.Primary.UserInfo);
    }

    [Fact]
    public void A_refused_url_never_shows_its_password_even_when_it_does_not_parse()
    {
        var error = Assert.Throws<InvalidOperationException>(() => BrokerConnection.Parse("amqp://runner:s3cr%t@h1:99999/"));
        Assert.DoesNotContain("s3cr", error.Message, StringComparison.Ordinal);
        Assert.Contains("runner:***@h1", error.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("http://h1/")]
    [InlineData("amqp://a:pw@h1/,http://h2/")]
    [InlineData(",")]
    public void Anything_but_amqp_urls_is_refused(string value) =>
        Assert.Throws<InvalidOperationException>(() => BrokerConnection.Parse(value));

    [Fact]
    public void Nothing_configured_is_the_local_broker() =>
        Assert.Equal(new Uri(BrokerConnection.LocalDefault), BrokerConnection.Parse(null).Primary);
}
