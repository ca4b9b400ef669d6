// Runs one invocation through RunnerService and prints its completion as one JSON line.
//
//   dotnet run -- [TASK [ARGUMENTS-JSON]]          (default: echo {"hello":"world"})
//
// The broker is ConnectionStrings__RabbitMq, as for the service (default amqp://guest:guest@127.0.0.1:5682/).
// Exit code 0 when the invocation succeeded, 1 when it did not, 2 when no completion came within 60 s.
using System.Text.Json;
using MassTransit;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using RunnerService.Contracts;
using RunnerService.Contracts.Client;

var taskName = args.Length > 0 ? args[0] : "echo";
var arguments = JsonDocument.Parse(args.Length > 1 ? args[1] : """{"hello":"world"}""").RootElement;

var builder = Host.CreateApplicationBuilder();
// stdout carries only the result line; the bus's logs go to stderr.
builder.Logging.AddConsole(console => console.LogToStandardErrorThreshold = LogLevel.Trace);
var broker = new Uri(builder.Configuration.GetConnectionString("RabbitMq") ?? "amqp://guest:guest@127.0.0.1:5682/");
builder.Services.AddMassTransit(x => x.UsingRabbitMq((context, cfg) => cfg.Host(broker)));
builder.Services.AddInvocationClient();

using var host = builder.Build();
await host.StartAsync(); // starts the bus

var runner = host.Services.GetRequiredService<IInvocationClient>();
using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
int exitCode;
try
{
    InvocationCompleted done = await runner.RunAsync(taskName, arguments, timeout.Token);
    Console.WriteLine(JsonSerializer.Serialize(new
    {
        invocationId = done.InvocationId,
        status = done.Status.ToString(),
        result = done.Result,
        error = done.Error,
    }));
    exitCode = done.Status == InvocationStatus.Succeeded ? 0 : 1;
}
catch (OperationCanceledException) when (timeout.IsCancellationRequested)
{
    Console.Error.WriteLine($"no completion of {taskName} within 60 s (is RunnerService running on {broker.Host}:{broker.Port}?)");
    exitCode = 2;
}

await host.StopAsync();
return exitCode;
