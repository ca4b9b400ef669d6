using System.Diagnostics;
using System.Text.Json;
using RunnerService.IntegrationTests.Infrastructure;
using Xunit.Abstractions;

namespace RunnerService.IntegrationTests;

/// <summary>
/// The executable as a command-line tool: verbs, help, usage errors and exit codes (docs/cli.md), run as a user runs
/// it. Where a test must not touch the broker, the broker setting points at a closed port: a command that tried to
/// connect would fail with 69, and one that started a replica would never return.
/// </summary>
[Collection(BrokerCollection.Name)]
[Trait("Category", "Integration")]
public sealed class CliTests(BrokerFixture broker, ITestOutputHelper output)
{
    const string ClosedPort = "amqp://guest:guest@127.0.0.1:1/";

    [Theory]
    [InlineData("sumbit", "echo")]
    [InlineData("submit", "echo", "--bogus")]
    [InlineData("submit", "-h2")]
    [InlineData("status", "--bogus")]
    [InlineData("--bogus")]
    public async Task A_typo_verb_or_an_unknown_option_prints_usage_to_stderr_and_exits_64_without_starting_a_replica(params string[] args)
    {
        var (exit, stdout, stderr) = await Cli.RunAsync(ClosedPort, args);
        output.WriteLine(stderr);
        Assert.Equal(64, exit);
        Assert.Contains("error: unknown", stderr, StringComparison.Ordinal);
        Assert.Contains("usage:", stderr, StringComparison.Ordinal);
        Assert.Equal("", stdout);
    }

    [Theory]
    [InlineData("--help")]
    [InlineData("-h")]
    [InlineData("help")]
    [InlineData("submit", "-h")]
    [InlineData("submit", "echo", "--help")]
    [InlineData("status", "--help")]
    [InlineData("cancel", "--help")]
    [InlineData("run", "--help")]
    public async Task Help_on_every_verb_goes_to_stdout_and_exits_0_without_touching_the_broker(params string[] args)
    {
        var (exit, stdout, stderr) = await Cli.RunAsync(ClosedPort, args);
        Assert.Equal(0, exit);
        Assert.Contains("RunnerService", stdout, StringComparison.Ordinal);
        Assert.Equal("", stderr);
    }

    [Fact]
    public async Task An_unreachable_broker_gets_one_line_and_exit_69_within_20_seconds_and_a_bad_url_exit_78()
    {
        var watch = Stopwatch.StartNew();
        var (exit, _, stderr) = await Cli.RunAsync(ClosedPort, "submit", "echo", "{}", "--wait");
        output.WriteLine($"{watch.Elapsed}: {stderr}");
        Assert.Equal(69, exit);
        // 10 s of trying to connect, plus the process's own start on a loaded machine.
        Assert.True(watch.Elapsed < TimeSpan.FromSeconds(20), $"took {watch.Elapsed}");
        Assert.Single(stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.Contains("cannot reach the broker at amqp://127.0.0.1:1/", stderr, StringComparison.Ordinal);
        Assert.DoesNotContain("guest", stderr, StringComparison.Ordinal); // no credentials in the message

        (exit, _, stderr) = await Cli.RunAsync("not a url", "status", Guid.NewGuid().ToString());
        output.WriteLine(stderr);
        Assert.Equal(78, exit);
        Assert.Single(stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries));
    }

    [Fact]
    public async Task Json_output_wait_timeout_and_status_exit_codes_against_a_running_service()
    {
        await using var env = await RunnerEnvironment.StartAsync(broker, output, slots: 2);

        // --count --json: one JSON object on stdout; stderr has no progress bar off a terminal.
        var (exit, stdout, stderr) = await Cli.RunAsync(env.Bus.Broker, "submit", "echo", "{}", "--count", "5", "--json");
        output.WriteLine(stdout);
        Assert.Equal(0, exit);
        var summary = JsonDocument.Parse(stdout).RootElement;
        Assert.Equal(5, summary.GetProperty("succeeded").GetInt32());
        Assert.Equal(5, summary.GetProperty("completed").GetInt32());
        Assert.DoesNotContain('\r', stderr);

        // --wait-timeout limits the command, not the invocation: exit 75 in one line, the invocation goes on.
        var watch = Stopwatch.StartNew();
        (exit, _, stderr) = await Cli.RunAsync(env.Bus.Broker, "submit", "sleep", """{"ms":4000}""", "--wait", "--wait-timeout", "1");
        output.WriteLine(stderr);
        Assert.Equal(75, exit);
        Assert.True(watch.Elapsed < TimeSpan.FromSeconds(20), $"took {watch.Elapsed}");
        Assert.Single(stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        var id = Guid.Parse(stderr.Split("no completion of ")[1][..36]);
        var completed = await env.Bus.WaitForCompletedAsync(id, TimeSpan.FromSeconds(60));
        Assert.Equal(RunnerService.Contracts.InvocationStatus.Succeeded, completed.Status);

        // status --json: the report as JSON, exit 0; an unknown id exits 3 with found: false.
        await TestBus.PollAsync(async () => (await env.Bus.Client.GetStatusAsync(id)).Status == "Succeeded" ? "" : null, TimeSpan.FromSeconds(30), "the saga's record");
        (exit, stdout, _) = await Cli.RunAsync(env.Bus.Broker, "status", id.ToString(), "--json");
        Assert.Equal(0, exit);
        Assert.Equal("Succeeded", JsonDocument.Parse(stdout).RootElement.GetProperty("status").GetString());
        (exit, stdout, _) = await Cli.RunAsync(env.Bus.Broker, "status", Guid.NewGuid().ToString(), "--json");
        Assert.Equal(3, exit);
        Assert.False(JsonDocument.Parse(stdout).RootElement.GetProperty("found").GetBoolean());

        // cancel: a finished invocation is left as it is (exit 1, told so); an unknown one is cancelled when it arrives.
        (exit, stdout, _) = await Cli.RunAsync(env.Bus.Broker, "cancel", id.ToString(), "--json");
        Assert.Equal(1, exit);
        Assert.Equal("AlreadyFinished", JsonDocument.Parse(stdout).RootElement.GetProperty("outcome").GetString());
        (exit, stdout, _) = await Cli.RunAsync(env.Bus.Broker, "cancel", Guid.NewGuid().ToString(), "--reason", "not wanted");
        Assert.Equal(0, exit);
        Assert.Contains("has not run yet", stdout, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_status_request_that_no_replica_answers_gets_one_line_and_exit_69()
    {
        await using var vhost = await broker.CreateVirtualHostAsync("cli-no-replica");
        var (exit, _, stderr) = await Cli.RunAsync(vhost.AmqpUri, "status", Guid.NewGuid().ToString());
        output.WriteLine(stderr);
        Assert.Equal(69, exit);
        Assert.Single(stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.Contains("no replica answered", stderr, StringComparison.Ordinal);
    }
}
