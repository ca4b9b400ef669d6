namespace RunnerService.Cli;

/// <summary><c>status INVOCATION_ID</c>: asks the invocation saga what it knows.</summary>
static class StatusCommand
{
    public static Task<int> RunAsync(string[] args, CancellationToken cancellationToken)
    {
        if (args.Length != 1 || !Guid.TryParse(args[0], out _))
            throw new CliUsageException("status needs one invocation id (a GUID)");
        Console.Error.WriteLine("status: the invocation saga is not part of this build yet");
        return Task.FromResult(2);
    }

    public static Task PrintTreeAsync(IServiceProvider services, Guid invocationId, CancellationToken cancellationToken)
    {
        Console.Error.WriteLine("--tree: the invocation saga is not part of this build yet");
        return Task.CompletedTask;
    }
}
