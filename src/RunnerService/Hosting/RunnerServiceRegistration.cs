using MassTransit;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Options;
using RunnerService.Invocations;
using RunnerService.Processes;
using RunnerService.Recovery;
using RunnerService.Saga;
using RunnerService.Saga.Messages;
using Microsoft.Extensions.DependencyInjection.Extensions;
using RunnerService.Slots;
using RunnerService.Status;
using RunnerService.Telemetry;

namespace RunnerService.Hosting;

public static class RunnerServiceRegistration
{
    /// <summary>Everything the service needs: options, slot pool, worker supervisor, MassTransit over RabbitMQ.</summary>
    public static IHostApplicationBuilder AddRunnerService(this IHostApplicationBuilder builder)
    {
        var services = builder.Services;
        services.AddOptions<RunnerOptions>()
            .Bind(builder.Configuration.GetSection(RunnerOptions.SectionName))
            .ValidateDataAnnotations()
            .ValidateOnStart();
        services.AddSingleton<IValidateOptions<RunnerOptions>, RunnerOptionsValidator>();
        services.AddSingleton(sp => EffectiveSettings.From(sp.GetRequiredService<IOptions<RunnerOptions>>().Value,
            sp.GetRequiredService<IConfiguration>(), sp.GetRequiredService<IHostEnvironment>().ContentRootPath));
        // First hosted service: the settings are in the log before anything else starts (or fails).
        services.AddHostedService<EffectiveSettingsLog>();
        services.AddSingleton(sp => new SlotPool(sp.GetRequiredService<IOptions<RunnerOptions>>().Value.EffectiveSlots));
        services.AddSingleton<WorkerSupervisor>();
        // Registered before MassTransit's hosted service, so it stops after the bus: the bus first stops consuming.
        services.AddHostedService(sp => sp.GetRequiredService<WorkerSupervisor>());
        services.AddSingleton<InvocationExecutor>();
        services.AddSingleton<ReplySender>();
        services.AddScoped<OwnershipClaims>();
        services.AddSagaStore(builder.Configuration);
        builder.AddRunnerTelemetry();

        services.TryAddSingleton(TimeProvider.System);
        services.AddSingleton<RunnerRegistry>();
        services.AddSingleton<BrokerContact>();
        services.AddRunnerHealthChecks();
        var heartbeatQueue = (builder.Configuration.GetSection(RunnerOptions.SectionName).Get<RunnerOptions>() ?? new RunnerOptions()).HeartbeatQueue;

        var broker = BrokerConnection.Resolve(builder.Configuration);
        services.AddMassTransit(x =>
        {
            x.SetKebabCaseEndpointNameFormatter();
            // No call home from production replicas (and no warnings from machines without internet access).
            x.DisableUsageTelemetry();
            RunnerHealthChecks.ConfigureBusHealthCheck(x);
            x.AddConsumer<RunInvocationConsumer, RunInvocationConsumerDefinition>();
            x.AddConsumer<ResumeInvocationConsumer, ResumeInvocationConsumerDefinition>();
            x.AddSagaStateMachine<InvocationStateMachine, InvocationState, InvocationStateMachineDefinition>().StoreRepository();
            x.AddConsumer<InvocationStatusConsumer>();
            x.AddConsumer<RunnerHeartbeatConsumer>().Endpoint(e =>
            {
                e.Name = heartbeatQueue;
                e.Temporary = true;
            });
            x.AddRequestClient<ClaimInvocation>(RequestTimeout.After(s: 30));
            // Every endpoint's queue type from one rule (classic, or quorum on a cluster).
            x.AddConfigureEndpointsCallback((context, queueName, endpoint) =>
                QueueTypes.Apply(endpoint, queueName, context.GetRequiredService<IOptions<RunnerOptions>>().Value, broker));
            x.UsingRabbitMq((context, cfg) =>
            {
                broker.Configure(cfg);
                QueueTypes.ConfigureBus(cfg);
                cfg.ConfigureEndpoints(context);
            });
        });
        // Stops before the bus (hosted services stop in reverse order), so reroutes can still be published.
        services.AddSingleton<ShutdownCoordinator>();
        services.AddHostedService(sp => sp.GetRequiredService<ShutdownCoordinator>());
        services.AddHostedService<RecoveryService>();
        services.AddHostedService<Saga.Persistence.SagaRetention>();
        // In a pod of the shipped Deployment only: scale-down prefers the pods with the least work (docs/operations.md).
        if (PodLocation.FromEnvironment(Environment.GetEnvironmentVariable) is { } pod)
            services.AddHostedService(sp => new PodDeletionCost(pod, pod.CreateHandler(),
                () => sp.GetRequiredService<SlotPool>().Busy + sp.GetRequiredService<WorkerSupervisor>().Sessions.Count(s => s.State == WorkerState.Paused),
                sp.GetRequiredService<TimeProvider>(), sp.GetRequiredService<Microsoft.Extensions.Logging.ILogger<PodDeletionCost>>()));
        services.Configure<MassTransitHostOptions>(o =>
        {
            o.WaitUntilStarted = true;
            // After the coordinator ran only parked deliveries remain; cancelling them returns them to the queue.
            o.ConsumerStopTimeout = TimeSpan.FromSeconds(5);
            o.StopTimeout = TimeSpan.FromSeconds(30);
        });
        services.Configure<HostOptions>(o =>
        {
            var grace = builder.Configuration.GetSection(RunnerOptions.SectionName).GetValue<TimeSpan?>(nameof(RunnerOptions.ShutdownGrace)) ?? new RunnerOptions().ShutdownGrace;
            var killGrace = builder.Configuration.GetSection(RunnerOptions.SectionName).GetValue<TimeSpan?>(nameof(RunnerOptions.KillGrace)) ?? new RunnerOptions().KillGrace;
            o.ShutdownTimeout = grace + killGrace + TimeSpan.FromSeconds(45);
        });
        return builder;
    }
}
