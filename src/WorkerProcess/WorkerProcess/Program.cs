using RunnerService.Worker;
using RunnerService.Worker.BuiltIn;

return await WorkerHost.RunAsync(tasks => tasks.AddBuiltInTasks());
