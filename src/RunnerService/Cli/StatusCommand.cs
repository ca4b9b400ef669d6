using System.Globalization;
using System.Text.Json;
using Microsoft.Extensions.DependencyInjection;
using RunnerService.Contracts;
using RunnerService.Contracts.Client;

namespace RunnerService.Cli;

/// <summary><c>status INVOCATION_ID [--json]</c>: asks the invocation saga (request/response) what it knows.</summary>
static class StatusCommand
{
    public static async Task<int> RunAsync(string[] args, CancellationToken cancellationToken)
    {
        var asJson = args.Contains("--json");
        var rest = args.Where(a => a != "--json").ToArray();
        if (rest.FirstOrDefault(a => a.StartsWith('-')) is { } unknown)
            throw new CliUsageException($"unknown option {unknown} for status");
        if (rest.Length != 1 || !Guid.TryParse(rest[0], out var invocationId))
            throw new CliUsageException("status needs one invocation id (a GUID)");
        using var host = await CliHost.StartAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            var report = await host.Services.GetRequiredService<IInvocationClient>().GetStatusAsync(invocationId, cancellationToken).ConfigureAwait(false);
            if (asJson)
                Console.WriteLine(ToJson(report));
            if (!report.Found)
            {
                // The saga records an invocation when it has run for Runner:TrackAfter, waits, or ends (docs/waiting.md).
                Console.Error.WriteLine($"invocation {invocationId} is not known to the saga: never submitted, still queued, or started less than Runner:TrackAfter ago");
                return CliApp.Unknown;
            }
            if (!asJson)
                Print(report);
            return CliApp.Ok;
        }
        finally
        {
            await host.StopAsync(CancellationToken.None).ConfigureAwait(false);
        }
    }

    /// <summary>The report as JSON; <c>processId</c> only when a process is known (never <c>0</c>).</summary>
    internal static string ToJson(InvocationStatusReport report)
    {
        var node = JsonSerializer.SerializeToNode(report, CliJson.Options)!.AsObject();
        if (report.ProcessId <= 0)
            node.Remove("processId");
        return node.ToJsonString(CliJson.Options);
    }

    static void Print(InvocationStatusReport report)
    {
        Console.WriteLine($"invocation:  {report.InvocationId}");
        Console.WriteLine($"task:        {report.TaskName}");
        Console.WriteLine($"status:      {report.Status}");
        if (report.ParentInvocationId is { } parent)
            Console.WriteLine($"parent:      {parent}");
        // A process is known once the saga heard of it (a track, a wait or the completion); none was started for an
        // invocation cancelled before it ran.
        var pid = report.ProcessId > 0 ? $"pid {report.ProcessId}, " : "";
        Console.WriteLine($"owner:       {report.OwnerInstance ?? "-"} ({pid}attempt {report.Attempt})");
        Console.WriteLine($"waiting for: {(report.WaitingFor.Count == 0 ? "-" : string.Join(", ", report.WaitingFor))}");
        Console.WriteLine($"waited by:   {(report.Waiters.Count == 0 ? "-" : string.Join(", ", report.Waiters))}");
        Console.WriteLine($"children:    {(report.Children.Count == 0 ? "-" : string.Join(", ", report.Children))}");
        if (report.Result is { } result)
            Console.WriteLine($"result:      {JsonSerializer.Serialize(result)}");
        if (report.Error is { } error)
            Console.WriteLine($"error:       {error.Type}: {error.Message}");
        Console.WriteLine("history:");
        foreach (var change in report.History)
        {
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"  {change.At:HH:mm:ss.fff}  {change.From,-10} -> {change.To,-10} replica {change.Replica ?? "-"}, attempt {change.Attempt}"));
        }
    }

    /// <summary>Prints the tree of sub-invocations under <paramref name="root"/> from the completions seen while waiting.</summary>
    public static void PrintTree(InvocationCompleted root, IReadOnlyCollection<InvocationCompleted> seen, TextWriter output)
    {
        var children = seen.Where(c => c.ParentInvocationId is not null)
            .GroupBy(c => c.ParentInvocationId!.Value)
            .ToDictionary(g => g.Key, g => g.OrderBy(c => c.CompletedAt).ToList());
        Write(root, "", true, true);

        void Write(InvocationCompleted node, string indent, bool last, bool isRoot)
        {
            var value = node.Status == InvocationStatus.Succeeded
                ? (node.Result is { } result ? JsonSerializer.Serialize(result) : "null")
                : $"{node.Error?.Type}: {node.Error?.Message}";
            if (value.Length > 80)
                value = value[..80] + "…";
            output.WriteLine($"{indent}{(isRoot ? "" : last ? "└─ " : "├─ ")}{node.TaskName} {node.Status} {value}  [{node.InvocationId}]");
            if (!children.TryGetValue(node.InvocationId, out var kids))
                return;
            var childIndent = indent + (isRoot ? "" : last ? "   " : "│  ");
            for (var i = 0; i < kids.Count; i++)
                Write(kids[i], childIndent, i == kids.Count - 1, false);
        }
    }
}
