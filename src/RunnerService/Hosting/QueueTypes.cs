using MassTransit;

namespace RunnerService.Hosting;

/// <summary>
/// One rule for the type of every queue the service consumes from (run at each endpoint's configuration): with
/// quorum queues on, every durable queue is a quorum queue and, with a delivery limit, a message past the limit is
/// dead-lettered into the queue's own <c>_error</c> queue, where MassTransit puts the faults too. The replica's
/// temporary heartbeat queue stays classic: a quorum queue is never auto-deleted.
/// The type, the limit and the dead-letter exchange are queue arguments, fixed when the queue is first declared:
/// a declaration with other values is refused by the broker (docs/operations.md, "Running on a RabbitMQ cluster").
/// </summary>
static class QueueTypes
{
    const string DeliveryLimitArgument = "x-delivery-limit";
    const string DeadLetterExchangeArgument = "x-dead-letter-exchange";

    public static void Apply(IReceiveEndpointConfigurator endpoint, string queueName, RunnerOptions options, BrokerConnection broker)
    {
        if (!options.UsesQuorumQueues(broker) || queueName == options.HeartbeatQueue || endpoint is not IRabbitMqReceiveEndpointConfigurator rabbit)
            return;
        rabbit.SetQuorumQueue();
        if (options.DeliveryLimit <= 0)
            return;
        rabbit.SetQueueArgument(DeliveryLimitArgument, options.DeliveryLimit);
        var errorQueue = $"{queueName}_error";
        rabbit.BindDeadLetterQueue(errorQueue, errorQueue, error => error.SetQuorumQueue());
    }

    /// <summary>
    /// MassTransit declares a queue's <c>_error</c> and <c>_skipped</c> queues with the queue's own arguments: without the
    /// limit and the dead-letter exchange there, so a message parked in them stays put, and the <c>_error</c> queue is
    /// declared the same way as by <see cref="Apply"/>'s dead-letter binding.
    /// </summary>
    public static void ConfigureBus(IRabbitMqBusFactoryConfigurator bus)
    {
        static void Plain(IRabbitMqQueueBindingConfigurator queue)
        {
            queue.SetQueueArgument(DeliveryLimitArgument, null!);
            queue.SetQueueArgument(DeadLetterExchangeArgument, null!);
        }
        bus.SendTopology.ConfigureErrorSettings = Plain;
        bus.SendTopology.ConfigureDeadLetterSettings = Plain;
    }
}
