using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.Extensions.Options;
using RunnerService.Cli;
using RunnerService.Hosting;
using RunnerService.Status;
using RunnerService.Telemetry;

if (!CliApp.RunsService(args, out var serviceArgs))
    return await CliApp.RunAsync(args);

// The content root is the service's own folder, so the appsettings.json next to it is read whatever the current folder
// (docs/operations.md, "Configuration files").
var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions
{
    Args = serviceArgs,
    ContentRootPath = ServiceContentRoot.Choose(serviceArgs),
});
builder.AddRunnerService();
builder.WebHost.UseUrls(builder.Configuration[$"{RunnerOptions.SectionName}:HttpUrl"] ?? new RunnerOptions().HttpUrl);
var app = builder.Build();
app.MapRunnerStatus();
app.MapRunnerMetrics();
await app.RunAsync();
return 0;
