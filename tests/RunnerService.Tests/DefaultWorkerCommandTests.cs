using RunnerService.Hosting;

namespace RunnerService.Tests;

[Trait("Category", "Unit")]
public sealed class DefaultWorkerCommandTests : IDisposable
{
    readonly DirectoryInfo _service = Directory.CreateTempSubdirectory("runner-default-worker-");

    public void Dispose() => _service.Delete(recursive: true);

    [Fact]
    public void The_native_aot_worker_in_worker_folder_next_to_the_service_is_the_default()
    {
        File.WriteAllText(Path.Combine(_service.FullName, "WorkerProcess"), "jit");
        Directory.CreateDirectory(Path.Combine(_service.FullName, "worker"));
        File.WriteAllText(Path.Combine(_service.FullName, "worker", "WorkerProcess"), "aot");

        Assert.Equal(Path.Combine(_service.FullName, "worker", "WorkerProcess"), RunnerOptions.DefaultWorkerCommandIn(_service.FullName));
    }

    [Fact]
    public void Without_the_native_aot_worker_the_default_is_the_jit_worker_built_next_to_the_service()
    {
        File.WriteAllText(Path.Combine(_service.FullName, "WorkerProcess"), "jit");

        Assert.Equal(Path.Combine(_service.FullName, "WorkerProcess"), RunnerOptions.DefaultWorkerCommandIn(_service.FullName));
    }

    [Fact]
    public void A_configured_worker_command_wins_over_both_builds()
    {
        var options = new RunnerOptions { WorkerCommand = "/opt/my-worker" };

        Assert.Equal("/opt/my-worker", options.EffectiveWorkerCommand);
        Assert.False(options.RunsJitStockWorker);
    }

    [Fact]
    public void Naming_the_jit_stock_worker_explicitly_still_counts_as_running_the_jit_worker()
    {
        var options = new RunnerOptions { WorkerCommand = Path.Combine(AppContext.BaseDirectory, "WorkerProcess") };

        Assert.True(options.RunsJitStockWorker);
    }
}
