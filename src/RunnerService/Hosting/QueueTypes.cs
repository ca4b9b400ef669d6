using MassTransit;

namespace RunnerService.Hosting;

/// <summary>
/// One rule for the type of every queue the service consumes from (run at each endpoint's configuration): with
/// quorum queues on, every durable queue is a quorum queue with the delivery limit, and a message past the limit is
/// dead-lettered into the queue's own <c>_error</c> queue, where MassTransit puts the faults too. The replica's
/// temporary heartbeat queue stays classic: a quorum queue is never auto-deleted.
/// </summary>
static class QueueTypes
{
    public const string DeliveryLimitArgument = "x-delivery-limit";

    public static void Apply(IReceiveEndpointConfigurator endpoint, string queueName, RunnerOptions options, BrokerConnection broker)
    {
        if (!options.UsesQuorumQueues(broker) || queueName == options.HeartbeatQueue || endpoint is not IRabbitMqReceiveEndpointConfigurator rabbit)
            return;
        rabbit.SetQuorumQueue();
        if (options.DeliveryLimit > 0)
            rabbit.SetQueueArgument(DeliveryLimitArgument, options.DeliveryLimit);
        // MassTransit's error queue copies the source queue's arguments (type, limit, dead-letter exchange), so the
        // queue declared here for dead-lettering must carry the same ones, or one of the two declarations is refused.
        var errorQueue = $"{queueName}_error";
        rabbit.BindDeadLetterQueue(errorQueue, errorQueue, error =>
        {
            error.SetQuorumQueue();
            if (options.DeliveryLimit > 0)
                error.SetQueueArgument(DeliveryLimitArgument, options.DeliveryLimit);
            error.SetQueueArgument("x-dead-letter-exchange", errorQueue);
        });
    }
}
