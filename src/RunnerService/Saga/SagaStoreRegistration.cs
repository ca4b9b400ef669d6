using System.Data.Common;
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

    /// <summary>
    /// Registers the durable saga store chosen by <c>ConnectionStrings:Sagas</c>: PostgreSQL when it is an Npgsql
    /// connection string (it names a <c>Host</c> or <c>Server</c>), for replicas sharing one store; else SQLite
    /// (<c>Data Source=…</c>), the single-node default.
    /// </summary>
    public static IServiceCollection AddSagaStore(this IServiceCollection services, IConfiguration configuration)
    {
        var connection = configuration.GetConnectionString(ConnectionName);
        if (string.IsNullOrWhiteSpace(connection))
            connection = DefaultSqliteConnection;
        if (IsPostgres(connection))
        {
            // Runner:SagaSchema puts the tables in their own schema (several deployments or tests on one database).
            var schema = configuration[$"{Hosting.RunnerOptions.SectionName}:SagaSchema"];
            services.TryAddSingleton<ISagaStore>(sp => new PostgresSagaStore(connection, string.IsNullOrWhiteSpace(schema) ? null : schema, sp.GetService<TimeProvider>()));
        }
        else
            services.TryAddSingleton<ISagaStore>(sp => new SqliteSagaStore(connection, sp.GetService<TimeProvider>()));
        services.AddHostedService<SagaStoreInitializer>();
        return services;
    }

    /// <summary>True when <paramref name="connectionString"/> is an Npgsql connection string (has <c>Host=</c> or <c>Server=</c>).</summary>
    public static bool IsPostgres(string connectionString)
    {
        var builder = new DbConnectionStringBuilder();
        try
        {
            builder.ConnectionString = connectionString;
        }
        catch (ArgumentException)
        {
            return false; // not key=value pairs at all; SQLite reports it
        }
        return builder.ContainsKey("Host") || builder.ContainsKey("Server");
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
