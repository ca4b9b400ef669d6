using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using MassTransit;
using RunnerService.Contracts;
using RunnerService.Contracts.Protocol;

namespace RunnerService.Bench;

/// <summary>
/// The naive baseline, "the thing a team writes in an afternoon": a plain MassTransit consumer that starts
/// <c>dotnet WorkerProcess.dll</c> for every message, writes the invocation line on its stdin, reads stdout until the
/// result, waits for the exit and publishes <see cref="InvocationCompleted"/>. No saga, no events, no pause/resume.
/// Runs as its own OS process (<c>RunnerService.Bench.dll naive-consumer …</c>), like the real service.
/// </summary>
static class NaiveBaseline
{
    public const string QueueName = "naive-run-invocation";

    public static async Task<int> RunAsync(string[] args)
    {
        Uri? broker = null;
        var slots = 2;
        string? workerDll = null;
        for (var i = 1; i < args.Length; i++)
        {
            switch (args[i])
            {
                case "--broker": broker = new Uri(args[++i]); break;
                case "--slots": slots = int.Parse(args[++i], CultureInfo.InvariantCulture); break;
                case "--worker-dll": workerDll = args[++i]; break;
                default: throw new ArgumentException($"naive-consumer: unknown argument '{args[i]}'");
            }
        }
        ArgumentNullException.ThrowIfNull(broker);
        ArgumentNullException.ThrowIfNull(workerDll);

        var bus = Bus.Factory.CreateUsingRabbitMq(cfg =>
        {
            cfg.Host(broker);
            cfg.ReceiveEndpoint(QueueName, e =>
            {
                e.PrefetchCount = slots;
                e.ConcurrentMessageLimit = slots;
                e.Consumer(() => new Consumer(workerDll));
            });
        });
        using (var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60)))
            await bus.StartAsync(cts.Token);
        Console.WriteLine("READY");
        Console.Out.Flush();

        var stop = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        using var onTerm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, c => { c.Cancel = true; stop.TrySetResult(); });
        using var onInt = PosixSignalRegistration.Create(PosixSignal.SIGINT, c => { c.Cancel = true; stop.TrySetResult(); });
        await stop.Task;
        using (var cts = new CancellationTokenSource(TimeSpan.FromSeconds(10)))
        {
            try
            {
                await bus.StopAsync(cts.Token);
            }
            catch (OperationCanceledException)
            {
            }
        }
        return 0;
    }

    sealed class Consumer(string workerDll) : IConsumer<RunInvocation>
    {
        public async Task Consume(ConsumeContext<RunInvocation> context)
        {
            var invocation = context.Message;
            var queuedFor = DateTimeOffset.UtcNow - (invocation.SubmittedAt ?? DateTimeOffset.UtcNow);
            var clock = Stopwatch.StartNew();
            var start = new ProcessStartInfo("dotnet")
            {
                RedirectStandardInput = true,
                RedirectStandardOutput = true,
                UseShellExecute = false,
            };
            start.ArgumentList.Add(workerDll);
            using var process = Process.Start(start)!;
            await process.StandardInput.WriteLineAsync(WorkerProtocol.Encode(new StartInvocationMessage
            {
                InvocationId = invocation.InvocationId,
                TaskName = invocation.TaskName,
                Arguments = invocation.Arguments,
                ParentInvocationId = invocation.ParentInvocationId,
            }));
            await process.StandardInput.FlushAsync();

            var completed = new InvocationCompleted
            {
                InvocationId = invocation.InvocationId,
                TaskName = invocation.TaskName,
                Status = InvocationStatus.Failed,
                Error = new InvocationError { Type = InvocationErrorTypes.WorkerExited, Message = "the worker exited without a result" },
            };
            while (await process.StandardOutput.ReadLineAsync() is { } line)
            {
                if (!WorkerProtocol.TryDecode(line, out var message, out _))
                    continue;
                if (message is ResultMessage result)
                {
                    completed = completed with { Status = InvocationStatus.Succeeded, Result = result.Result, Error = null };
                    break;
                }
                if (message is ErrorMessage error)
                {
                    completed = completed with { Error = error.Error };
                    break;
                }
            }
            process.StandardInput.Close();
            await process.WaitForExitAsync();
            completed = completed with
            {
                ProcessId = process.Id,
                RunnerInstance = "naive",
                QueuedFor = queuedFor < TimeSpan.Zero ? TimeSpan.Zero : queuedFor,
                RunFor = clock.Elapsed,
                CompletedAt = DateTimeOffset.UtcNow,
            };
            await context.Publish(completed);
            // As RunnerService does: the client's own queue (IInvocationClient.RunAsync names it) gets a copy.
            if (context.ResponseAddress is { } replyTo)
                await (await context.GetSendEndpoint(replyTo)).Send(completed);
        }
    }
}
