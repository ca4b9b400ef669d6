using MassTransit;
using MassTransit.Configuration;
using MassTransit.Saga;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Hosting;
using RunnerService.Saga.Persistence;

namespace RunnerService.Saga;

public static class SagaStoreRegistration
{
    public const string ConnectionName = "Sagas";

    /// <summary>The default SQLite file when <c>ConnectionStrings:Sagas</c> is not set.</summary>
    public static string DefaultSqliteConnection => $"Data Source={Path.Combine(AppContext.BaseDirectory, "data", "sagas.db")}";

    /// <summary>Registers the durable saga store chosen by <c>ConnectionStrings:Sagas</c> (a SQLite <c>Data Source=…</c>).</summary>
    public static IServiceCollection AddSagaStore(this IServiceCollection services, IConfiguration configuration)
    {
        var connection = configuration.GetConnectionString(ConnectionName);
        if (string.IsNullOrWhiteSpace(connection))
            connection = DefaultSqliteConnection;
        services.TryAddSingleton<ISagaStore>(_ => new SqliteSagaStore(connection));
        services.AddHostedService<SagaStoreInitializer>();
        return services;
    }

    /// <summary>Uses the registered <see cref="ISagaStore"/> as the repository of <see cref="InvocationState"/>.</summary>
    public static ISagaRegistrationConfigurator<InvocationState> StoreRepository(this ISagaRegistrationConfigurator<InvocationState> configurator)
    {
        configurator.Repository(r =>
        {
            r.RegisterSagaRepository<InvocationState, ISagaStoreTransaction, SagaConsumeContextFactory<ISagaStoreTransaction, InvocationState>,
                InvocationSagaRepositoryContextFactory>();
            r.RegisterLoadSagaRepository<InvocationState, InvocationSagaRepositoryContextFactory>();
            r.RegisterQuerySagaRepository<InvocationState, InvocationSagaRepositoryContextFactory>();
        });
        return configurator;
    }

    sealed class SagaStoreInitializer(ISagaStore store) : IHostedService
    {
        public Task StartAsync(CancellationToken cancellationToken) => store.InitializeAsync(cancellationToken);

        public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
    }
}
