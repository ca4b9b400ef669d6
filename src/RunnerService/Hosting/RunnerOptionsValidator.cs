using Microsoft.Extensions.Options;

namespace RunnerService.Hosting;

/// <summary>
/// Checks what data annotations cannot: the worker command exists, the instance id makes a valid queue name, the
/// timeouts fit .NET's timers and each other.
/// </summary>
sealed class RunnerOptionsValidator : IValidateOptions<RunnerOptions>
{
    public ValidateOptionsResult Validate(string? name, RunnerOptions options)
    {
        var failures = new List<string>();
        var command = options.EffectiveWorkerCommand;
        if (Path.IsPathRooted(command) && !File.Exists(command))
            failures.Add($"Runner:WorkerCommand '{command}' does not exist.");
        if (options.EffectiveInstanceId.Any(c => !(char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.')))
            failures.Add($"Runner:InstanceId '{options.EffectiveInstanceId}' may only contain letters, digits, '-', '_' and '.'.");
        if (options.DefaultTimeout <= TimeSpan.Zero)
            failures.Add("Runner:DefaultTimeout must be positive.");
        if (options.MaxTimeout <= TimeSpan.Zero || options.MaxTimeout > RunnerOptions.TimeoutCeiling)
            failures.Add($"Runner:MaxTimeout must be positive and at most {RunnerOptions.TimeoutCeiling.Days} days (the longest .NET timer is about 49.7 days).");
        else if (options.DefaultTimeout > options.MaxTimeout)
            failures.Add($"Runner:DefaultTimeout ({options.DefaultTimeout}) must not exceed Runner:MaxTimeout ({options.MaxTimeout}).");
        if (options.RetainFinished < TimeSpan.FromSeconds(1) || options.RetainFinished > TimeSpan.FromDays(3650))
            failures.Add("Runner:RetainFinished must be between 1 second and 10 years.");
        if (options.ProgressInterval < TimeSpan.FromMilliseconds(10) || options.ProgressInterval > TimeSpan.FromHours(1))
            failures.Add("Runner:ProgressInterval must be between 10 ms and 1 hour.");
        if (options.TrackAfter < TimeSpan.Zero || options.TrackAfter > TimeSpan.FromDays(1))
            failures.Add("Runner:TrackAfter must be between 0 and 1 day.");
        if (options.KillGrace < TimeSpan.Zero || options.KillGrace > TimeSpan.FromMinutes(10))
            failures.Add("Runner:KillGrace must be between 0 and 10 minutes.");
        if (options.StdinTimeout <= TimeSpan.Zero || options.StdinTimeout > TimeSpan.FromHours(1))
            failures.Add("Runner:StdinTimeout must be positive and at most 1 hour.");
        if (!Uri.TryCreate(options.HttpUrl, UriKind.Absolute, out _))
            failures.Add($"Runner:HttpUrl '{options.HttpUrl}' is not an absolute URL.");
        return failures.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(failures);
    }
}
