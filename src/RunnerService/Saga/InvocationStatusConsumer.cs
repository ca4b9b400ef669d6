using MassTransit;
using RunnerService.Contracts;
using RunnerService.Saga.Persistence;

namespace RunnerService.Saga;

/// <summary>
/// Answers <see cref="GetInvocationStatus"/> (the CLI's <c>status</c>, <c>IInvocationClient.GetStatusAsync</c>) from the
/// saga store, outside the saga: a status query takes no row lock, writes no new version and never waits behind the
/// invocation's own events.
/// </summary>
sealed class InvocationStatusConsumer(ISagaStore store) : IConsumer<GetInvocationStatus>
{
    public async Task Consume(ConsumeContext<GetInvocationStatus> context)
    {
        var id = context.Message.InvocationId;
        var stored = await store.ReadAsync(id, context.CancellationToken).ConfigureAwait(false);
        await context.RespondAsync(stored is null
            ? new InvocationStatusReport { InvocationId = id, Found = false }
            : InvocationStateMachine.Report(InvocationSagaRepositoryContextFactory.Deserialize(stored))).ConfigureAwait(false);
    }
}
