using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;

namespace RunnerService.Contracts.Client;

public static class InvocationClientRegistration
{
    /// <summary>
    /// Registers <see cref="IInvocationClient"/> for a service that already calls <c>AddMassTransit</c>
    /// (any transport connected to the broker RunnerService consumes from).
    /// </summary>
    public static IServiceCollection AddInvocationClient(this IServiceCollection services)
    {
        services.TryAddSingleton<InvocationClient>();
        services.TryAddSingleton<IInvocationClient>(sp => sp.GetRequiredService<InvocationClient>());
        return services;
    }
}
