using System.Text.Json;
using Microsoft.Extensions.DependencyInjection;
using RunnerService.Contracts.Client;

namespace RunnerService.Cli;

/// <summary><c>cancel INVOCATION_ID [--reason TEXT] [--json]</c>: asks the saga to cancel an invocation and its subtree.</summary>
static class CancelCommand
{
    public static async Task<int> RunAsync(string[] args, CancellationToken cancellationToken)
    {
        string? reason = null;
        var asJson = false;
        Guid? invocationId = null;
        for (var i = 0; i < args.Length; i++)
        {
            switch (args[i])
            {
                case "--reason":
                    reason = i + 1 < args.Length ? args[++i] : throw new CliUsageException("--reason needs a text");
                    break;
                case "--json":
                    asJson = true;
                    break;
                default:
                    if (args[i].StartsWith('-'))
                        throw new CliUsageException($"unknown option {args[i]} for cancel");
                    invocationId = invocationId is null && Guid.TryParse(args[i], out var id)
                        ? id : throw new CliUsageException("cancel needs one invocation id (a GUID)");
                    break;
            }
        }
        if (invocationId is null)
            throw new CliUsageException("cancel needs one invocation id (a GUID)");
        using var host = await CliHost.StartAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            var client = host.Services.GetRequiredService<IInvocationClient>();
            var reply = await client.CancelAsync(invocationId.Value, reason, $"{Environment.UserName}@{Environment.MachineName} (cli)", cancellationToken).ConfigureAwait(false);
            if (asJson)
                Console.WriteLine(JsonSerializer.Serialize(reply, CliJson.Options));
            else
            {
                Console.WriteLine(reply.Outcome switch
                {
                    "Cancelling" => $"cancelling {reply.InvocationId} ({reply.Status}): its replica kills it and its subtree; it completes as Cancelled",
                    "Pending" => $"{reply.InvocationId} has not run yet ({reply.Status}): it is cancelled when it arrives",
                    _ => $"{reply.InvocationId} already finished ({reply.Status}): nothing to cancel",
                });
            }
            return reply.Outcome == "AlreadyFinished" ? CliApp.NotSucceeded : CliApp.Ok;
        }
        finally
        {
            await host.StopAsync(CancellationToken.None).ConfigureAwait(false);
        }
    }
}
