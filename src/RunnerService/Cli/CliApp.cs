namespace RunnerService.Cli;

/// <summary>Dispatches the CLI verbs; with no verb the executable runs the service.</summary>
static class CliApp
{
    public static bool IsCliVerb(string[] args) => args.Length > 0 && args[0] is "submit" or "status" or "--help" or "-h" or "help";

    public static async Task<int> RunAsync(string[] args)
    {
        using var cancel = new CancellationTokenSource();
        Console.CancelKeyPress += (_, e) =>
        {
            e.Cancel = true;
            cancel.Cancel();
        };
        // SIGTERM (e.g. from `timeout`) cancels a waiting CLI too, not only Ctrl-C.
        using var onTerm = System.Runtime.InteropServices.PosixSignalRegistration.Create(System.Runtime.InteropServices.PosixSignal.SIGTERM, context =>
        {
            context.Cancel = true;
            cancel.Cancel();
        });
        try
        {
            return args[0] switch
            {
                "submit" => await SubmitCommand.RunAsync(args[1..], cancel.Token).ConfigureAwait(false),
                "status" => await StatusCommand.RunAsync(args[1..], cancel.Token).ConfigureAwait(false),
                _ => Usage(null),
            };
        }
        catch (CliUsageException ex)
        {
            return Usage(ex.Message);
        }
        catch (OperationCanceledException)
        {
            await Console.Error.WriteLineAsync("cancelled").ConfigureAwait(false);
            return 130;
        }
    }

    static int Usage(string? error)
    {
        if (error is not null)
            Console.Error.WriteLine($"error: {error}");
        Console.Error.WriteLine("""
            usage:
              RunnerService                          run the service
              RunnerService submit TASK [JSON] [--wait] [--tree] [--timeout SECONDS]
                                                     publish one invocation; --wait prints its completion as one
                                                     JSON line and exits 0 only when it Succeeded
              RunnerService submit TASK [JSON] --count N
                                                     publish N invocations, show progress, print a summary
              RunnerService status INVOCATION_ID     print what the saga knows about an invocation
            the broker comes from ConnectionStrings__RabbitMq (default amqp://guest:guest@127.0.0.1:5682/)
            """);
        return error is null ? 0 : 64;
    }
}

sealed class CliUsageException(string message) : Exception(message);
