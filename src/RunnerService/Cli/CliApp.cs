using MassTransit;

namespace RunnerService.Cli;

/// <summary>
/// Dispatches the command line. With no arguments, or the verb <c>run</c>, the executable runs the service; the CLI
/// verbs talk to a running one. Anything else is a usage error: a typo never starts a replica that joins the pool.
/// Exit codes (docs/cli.md): 0 done (the invocation Succeeded), 1 it ended otherwise (or was already finished when
/// cancelled), 3 not known to the saga,
/// 64 usage, 69 broker or replicas unavailable, 70 internal error, 75 <c>--wait-timeout</c> passed, 78 bad
/// configuration, 130 interrupted.
/// </summary>
static class CliApp
{
    public const int Ok = 0, NotSucceeded = 1, Unknown = 3, UsageError = 64, Unavailable = 69, Internal = 70, WaitTimedOut = 75, BadConfiguration = 78, Interrupted = 130;

    /// <summary>True when the arguments ask for the service itself; <paramref name="serviceArgs"/> are then the host's own (configuration overrides).</summary>
    public static bool RunsService(string[] args, out string[] serviceArgs)
    {
        serviceArgs = args.Length > 0 && args[0] == "run" ? args[1..] : args;
        return args.Length == 0
            || (args[0] == "run" && !serviceArgs.Any(IsHelp))
            || IsConfigurationOverride(args[0]);
    }

    /// <summary>A .NET configuration key given on the command line (<c>--Runner:Slots=4</c>, <c>--Runner:Slots 4</c>).</summary>
    static bool IsConfigurationOverride(string arg) => arg.StartsWith("--", StringComparison.Ordinal) && arg.Contains(':', StringComparison.Ordinal);

    public static bool IsHelp(string arg) => arg is "-h" or "--help";

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
            var verb = args[0];
            if (verb is "help" || IsHelp(verb))
                return Help(Usage);
            var rest = args[1..];
            if (verb is "submit" or "status" or "cancel" or "run" && rest.Any(IsHelp))
                return Help(verb switch { "submit" => SubmitUsage, "status" => StatusUsage, "cancel" => CancelUsage, _ => RunUsage });
            return verb switch
            {
                "submit" => await SubmitCommand.RunAsync(rest, cancel.Token).ConfigureAwait(false),
                "status" => await StatusCommand.RunAsync(rest, cancel.Token).ConfigureAwait(false),
                "cancel" => await CancelCommand.RunAsync(rest, cancel.Token).ConfigureAwait(false),
                _ => throw new CliUsageException($"unknown verb '{verb}'"),
            };
        }
        catch (CliUsageException ex)
        {
            await Console.Error.WriteLineAsync($"error: {ex.Message}\n{Usage}").ConfigureAwait(false);
            return UsageError;
        }
        catch (CliFailure ex)
        {
            await Console.Error.WriteLineAsync($"error: {ex.Message}").ConfigureAwait(false);
            return ex.ExitCode;
        }
        catch (OperationCanceledException) when (cancel.IsCancellationRequested)
        {
            await Console.Error.WriteLineAsync("interrupted").ConfigureAwait(false);
            return Interrupted;
        }
        catch (RequestTimeoutException)
        {
            await Console.Error.WriteLineAsync("error: no replica answered: is a RunnerService replica running on this broker and virtual host?").ConfigureAwait(false);
            return Unavailable;
        }
        catch (Exception ex)
        {
            // One line, never a stack trace: the CLI is a command-line tool.
            await Console.Error.WriteLineAsync($"error: {ex.GetType().Name}: {ex.Message}").ConfigureAwait(false);
            return Internal;
        }
    }

    static int Help(string text)
    {
        Console.WriteLine(text);
        return Ok;
    }

    const string BrokerLine = "the broker comes from ConnectionStrings__RabbitMq (default amqp://guest:guest@127.0.0.1:5682/)";

    const string SubmitUsage = """
          RunnerService submit TASK [JSON] [--wait] [--tree] [--timeout SECONDS] [--wait-timeout SECONDS]
                                                 publish one invocation and print its id; --wait prints its completion
                                                 as one JSON line and exits 0 only when it Succeeded (1 otherwise);
                                                 --tree also prints its sub-invocations to stderr; --timeout is the
                                                 invocation's own limit, --wait-timeout how long this command waits
                                                 (exit 75 when it passes; the invocation goes on)
          RunnerService submit TASK [JSON] --count N [--json] [--timeout SECONDS] [--wait-timeout SECONDS]
                                                 run N invocations, show progress on stderr, print a summary
                                                 (--json: one JSON object)
        """;

    const string StatusUsage = """
          RunnerService status INVOCATION_ID [--json]
                                                 print what the saga knows about an invocation (--json: the report
                                                 as JSON, as GET /invocations/{id} returns it); exit 3 when unknown
        """;

    const string CancelUsage = """
          RunnerService cancel INVOCATION_ID [--reason TEXT] [--json]
                                                 cancel an invocation and its subtree: queued, it never runs; running
                                                 or paused, it is killed; each completes as Cancelled. Exit 1 when it
                                                 had already finished
        """;

    const string RunUsage = """
          RunnerService [run] [--Section:Key=value ...]
                                                 run the service, with optional configuration overrides
        """;

    static readonly string Usage = $"""
        usage:
        {RunUsage}
        {SubmitUsage}
        {StatusUsage}
        {CancelUsage}
          RunnerService help | -h | --help       this text; VERB --help for one verb
        {BrokerLine}
        exit codes: 0 done, 1 not Succeeded, 3 unknown invocation, 64 usage, 69 broker or replicas unavailable,
                    70 internal error, 75 --wait-timeout passed, 78 bad configuration, 130 interrupted
        """;
}

/// <summary>A wrong command line: usage goes to stderr, exit 64.</summary>
sealed class CliUsageException(string message) : Exception(message);

/// <summary>A failure the CLI reports in one line with its own exit code.</summary>
sealed class CliFailure(int exitCode, string message) : Exception(message)
{
    public int ExitCode { get; } = exitCode;
}
