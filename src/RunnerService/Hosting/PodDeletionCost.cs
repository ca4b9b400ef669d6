using System.Net.Http.Headers;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace RunnerService.Hosting;

/// <summary>
/// Where this replica's pod is in Kubernetes and how to reach the API server from inside it: set only when the service
/// runs in a pod (<c>KUBERNETES_SERVICE_HOST</c>) whose Deployment gives the pod's name through the Downward API
/// (<c>RUNNER_POD_NAME</c>; <c>RUNNER_POD_NAMESPACE</c>, else the service account's namespace file).
/// </summary>
public sealed record PodLocation(Uri PodUri, string TokenFile, string? CaFile)
{
    public const string PodNameVariable = "RUNNER_POD_NAME";
    public const string PodNamespaceVariable = "RUNNER_POD_NAMESPACE";
    public const string ServiceAccountDirectory = "/var/run/secrets/kubernetes.io/serviceaccount";

    /// <summary>The pod's API address from the environment, or null when not in a pod of the shipped Deployment.</summary>
    public static PodLocation? FromEnvironment(Func<string, string?> environment, string serviceAccountDirectory = ServiceAccountDirectory)
    {
        var host = environment("KUBERNETES_SERVICE_HOST");
        var pod = environment(PodNameVariable);
        if (string.IsNullOrWhiteSpace(host) || string.IsNullOrWhiteSpace(pod))
            return null;
        var port = environment("KUBERNETES_SERVICE_PORT");
        var ns = environment(PodNamespaceVariable);
        var namespaceFile = Path.Combine(serviceAccountDirectory, "namespace");
        if (string.IsNullOrWhiteSpace(ns) && File.Exists(namespaceFile))
            ns = File.ReadAllText(namespaceFile).Trim();
        if (string.IsNullOrWhiteSpace(ns))
            return null;
        var authority = host.Contains(':') && !host.StartsWith('[') ? $"[{host}]" : host; // an IPv6 service address
        var uri = new Uri($"https://{authority}:{(string.IsNullOrWhiteSpace(port) ? "443" : port)}/api/v1/namespaces/{Uri.EscapeDataString(ns)}/pods/{Uri.EscapeDataString(pod)}");
        var ca = Path.Combine(serviceAccountDirectory, "ca.crt");
        return new PodLocation(uri, Path.Combine(serviceAccountDirectory, "token"), File.Exists(ca) ? ca : null);
    }

    /// <summary>An HTTP handler that trusts the cluster's CA (the service account's <c>ca.crt</c>) for the API server.</summary>
    public HttpMessageHandler CreateHandler()
    {
        var handler = new SocketsHttpHandler { PooledConnectionLifetime = TimeSpan.FromMinutes(5) };
        if (CaFile is { } caFile)
        {
            var ca = X509CertificateLoader.LoadCertificateFromFile(caFile);
            handler.SslOptions.RemoteCertificateValidationCallback = (_, certificate, presented, errors) =>
            {
                if (certificate is null)
                    return false;
                if (errors == System.Net.Security.SslPolicyErrors.None)
                    return true;
                if ((errors & ~System.Net.Security.SslPolicyErrors.RemoteCertificateChainErrors) != 0)
                    return false; // a name mismatch or no certificate: never accepted
                using var chain = new X509Chain();
                chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
                chain.ChainPolicy.CustomTrustStore.Add(ca);
                chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
                if (presented is not null)
                {
                    foreach (var element in presented.ChainElements)
                        chain.ChainPolicy.ExtraStore.Add(element.Certificate); // intermediates the server sent
                }
                return chain.Build(X509CertificateLoader.LoadCertificate(certificate.GetRawCertData()));
            };
        }
        return handler;
    }
}

/// <summary>
/// Keeps the annotation <c>controller.kubernetes.io/pod-deletion-cost</c> on this replica's own pod equal to the work
/// that removing the pod would throw away (busy slots plus paused workers), so that when KEDA/the HPA scales the
/// Deployment down, the ReplicaSet removes idle pods first. It looks every <see cref="PollInterval"/>, patches only
/// when the number changed, and at most once per <see cref="MinPatchInterval"/> (every change costs the API server a
/// write and the ReplicaSet controller a pod update). Failures (no RBAC, API server unreachable) are logged once per
/// streak and never touch invocations: the cost is a preference of the scale-down, not a guarantee.
/// </summary>
public sealed partial class PodDeletionCost : BackgroundService
{
    public const string Annotation = "controller.kubernetes.io/pod-deletion-cost";

    readonly HttpClient _http;
    readonly PodLocation _pod;
    readonly Func<int> _cost;
    readonly TimeProvider _time;
    readonly ILogger _logger;
    int? _patched;
    DateTimeOffset? _lastAttempt;
    bool _failing;

    public PodDeletionCost(PodLocation pod, HttpMessageHandler handler, Func<int> cost, TimeProvider time, ILogger<PodDeletionCost> logger)
    {
        _pod = pod;
        _http = new HttpClient(handler) { Timeout = TimeSpan.FromSeconds(10) };
        _cost = cost;
        _time = time;
        _logger = logger;
    }

    public TimeSpan PollInterval { get; init; } = TimeSpan.FromSeconds(1);
    public TimeSpan MinPatchInterval { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>The cost last written to the pod (null before the first successful patch).</summary>
    public int? Patched => _patched;

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        using var timer = new PeriodicTimer(PollInterval, _time);
        try
        {
            do
            {
                try
                {
                    await UpdateAsync(stoppingToken);
                }
                catch (Exception e) when (!stoppingToken.IsCancellationRequested)
                {
                    Failed(e.Message); // whatever it is, it must not stop the host
                }
            }
            while (await timer.WaitForNextTickAsync(stoppingToken));
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
        }
    }

    /// <summary>One look: patches the pod when the cost changed and the last attempt is old enough. True when it patched.</summary>
    public async Task<bool> UpdateAsync(CancellationToken cancellationToken)
    {
        var cost = _cost();
        if (cost == _patched)
            return false;
        var now = _time.GetUtcNow();
        if (_lastAttempt is { } last && now - last < MinPatchInterval)
            return false;
        _lastAttempt = now;
        try
        {
            using var request = new HttpRequestMessage(HttpMethod.Patch, _pod.PodUri);
            var token = (await File.ReadAllTextAsync(_pod.TokenFile, cancellationToken)).Trim(); // re-read: projected tokens rotate
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", token);
            request.Content = new StringContent(PatchBody(cost), Encoding.UTF8);
            request.Content.Headers.ContentType = new MediaTypeHeaderValue("application/merge-patch+json");
            using var response = await _http.SendAsync(request, cancellationToken);
            if (!response.IsSuccessStatusCode)
            {
                var body = await response.Content.ReadAsStringAsync(cancellationToken);
                Failed($"{(int)response.StatusCode} {response.ReasonPhrase}: {body[..Math.Min(body.Length, 300)]}");
                return false;
            }
            _patched = cost;
            if (_failing)
                LogRecovered(_logger, cost);
            _failing = false;
            return true;
        }
        catch (Exception e) when ((e is HttpRequestException or IOException or UnauthorizedAccessException or TaskCanceledException) && !cancellationToken.IsCancellationRequested)
        {
            Failed(e.Message);
            return false;
        }
    }

    /// <summary>The JSON merge patch that sets the annotation (annotation values are strings).</summary>
    public static string PatchBody(int cost) =>
        $"{{\"metadata\":{{\"annotations\":{{\"{Annotation}\":\"{cost.ToString(System.Globalization.CultureInfo.InvariantCulture)}\"}}}}}}";

    void Failed(string reason)
    {
        if (!_failing)
            LogFailed(_logger, _pod.PodUri, reason);
        _failing = true;
    }

    public override void Dispose()
    {
        _http.Dispose();
        base.Dispose();
    }

    [LoggerMessage(EventId = 120, Level = LogLevel.Warning, Message =
        "PodDeletionCost: could not set " + Annotation + " on {Pod}: {Reason}. Scale-down may remove busy pods first; "
        + "check the service account's Role (pods: get, patch). Retried quietly; invocations are not affected.")]
    static partial void LogFailed(ILogger logger, Uri pod, string reason);

    [LoggerMessage(EventId = 121, Level = LogLevel.Information, Message = "PodDeletionCost: " + Annotation + " set again ({Cost}).")]
    static partial void LogRecovered(ILogger logger, int cost);
}
