using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using System.Text.Json;
using Microsoft.Extensions.Logging.Abstractions;
using RunnerService.Hosting;

namespace RunnerService.Tests;

/// <summary>The updater of <c>controller.kubernetes.io/pod-deletion-cost</c>, against a fake API server.</summary>
[Trait("Category", "Unit")]
public sealed class PodDeletionCostTests : IDisposable
{
    readonly string _serviceAccount = Directory.CreateTempSubdirectory("sa-").FullName;

    sealed record Request(HttpMethod Method, Uri Uri, string? ContentType, string? Authorization, string Body);

    sealed class FakeApiServer : HttpMessageHandler
    {
        public List<Request> Requests { get; } = [];
        public HttpStatusCode Status { get; set; } = HttpStatusCode.OK;

        protected override async Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
        {
            Requests.Add(new Request(request.Method, request.RequestUri!, request.Content?.Headers.ContentType?.MediaType,
                request.Headers.Authorization?.ToString(), request.Content is null ? "" : await request.Content.ReadAsStringAsync(cancellationToken)));
            return new HttpResponseMessage(Status) { Content = new StringContent("{}") };
        }
    }

    public void Dispose() => Directory.Delete(_serviceAccount, recursive: true);

    PodLocation Location()
    {
        File.WriteAllText(Path.Combine(_serviceAccount, "token"), "token-1\n");
        File.WriteAllText(Path.Combine(_serviceAccount, "namespace"), "runner");
        var env = new Dictionary<string, string> { ["KUBERNETES_SERVICE_HOST"] = "10.0.0.1", ["KUBERNETES_SERVICE_PORT"] = "443", [PodLocation.PodNameVariable] = "runner-service-abc12" };
        return PodLocation.FromEnvironment(k => env.GetValueOrDefault(k), _serviceAccount)!;
    }

    [Fact]
    public void Only_a_pod_of_the_shipped_deployment_patches_itself()
    {
        Assert.Null(PodLocation.FromEnvironment(_ => null, _serviceAccount));
        Assert.Null(PodLocation.FromEnvironment(k => k == "KUBERNETES_SERVICE_HOST" ? "10.0.0.1" : null, _serviceAccount)); // no pod name given
        var location = Location();
        Assert.Equal("https://10.0.0.1/api/v1/namespaces/runner/pods/runner-service-abc12", location.PodUri.ToString());
        var env = new Dictionary<string, string> { ["KUBERNETES_SERVICE_HOST"] = "fd00::1", ["KUBERNETES_SERVICE_PORT"] = "6443", [PodLocation.PodNameVariable] = "p", [PodLocation.PodNamespaceVariable] = "ns" };
        Assert.Equal("https://[fd00::1]:6443/api/v1/namespaces/ns/pods/p", PodLocation.FromEnvironment(k => env.GetValueOrDefault(k), _serviceAccount)!.PodUri.ToString());
    }

    [Fact]
    public async Task Patches_the_annotation_as_a_merge_patch_with_the_service_account_token()
    {
        var server = new FakeApiServer();
        var cost = 3;
        using var updater = new PodDeletionCost(Location(), server, () => cost, new ManualClock(), NullLogger<PodDeletionCost>.Instance);

        Assert.True(await updater.UpdateAsync(CancellationToken.None));

        var request = Assert.Single(server.Requests);
        Assert.Equal(HttpMethod.Patch, request.Method);
        Assert.Equal("https://10.0.0.1/api/v1/namespaces/runner/pods/runner-service-abc12", request.Uri.ToString());
        Assert.Equal("application/merge-patch+json", request.ContentType);
        Assert.Equal("Bearer token-1", request.Authorization);
        using var body = JsonDocument.Parse(request.Body);
        Assert.Equal("3", body.RootElement.GetProperty("metadata").GetProperty("annotations").GetProperty(PodDeletionCost.Annotation).GetString());
        Assert.Single(body.RootElement.EnumerateObject());
        Assert.Equal(3, updater.Patched);
    }

    [Fact]
    public async Task Patches_only_when_the_cost_changed_and_at_most_once_per_interval()
    {
        var server = new FakeApiServer();
        var clock = new ManualClock();
        var cost = 0;
        using var updater = new PodDeletionCost(Location(), server, () => cost, clock, NullLogger<PodDeletionCost>.Instance) { MinPatchInterval = TimeSpan.FromSeconds(5) };

        Assert.True(await updater.UpdateAsync(CancellationToken.None)); // the first look always writes (the pod may carry an old value)
        for (var i = 0; i < 10; i++)
        {
            clock.Now += TimeSpan.FromSeconds(1);
            Assert.False(await updater.UpdateAsync(CancellationToken.None)); // unchanged: nothing sent
        }
        Assert.Single(server.Requests);

        cost = 2;
        Assert.True(await updater.UpdateAsync(CancellationToken.None));
        cost = 4;
        clock.Now += TimeSpan.FromSeconds(1);
        Assert.False(await updater.UpdateAsync(CancellationToken.None)); // changed, but the last patch is 1 s old
        clock.Now += TimeSpan.FromSeconds(3);
        Assert.False(await updater.UpdateAsync(CancellationToken.None));
        cost = 1;
        clock.Now += TimeSpan.FromSeconds(1);
        Assert.True(await updater.UpdateAsync(CancellationToken.None)); // 5 s later: the latest value, not the ones between
        Assert.Equal(["0", "2", "1"], server.Requests.Select(r => JsonDocument.Parse(r.Body).RootElement
            .GetProperty("metadata").GetProperty("annotations").GetProperty(PodDeletionCost.Annotation).GetString()!));
    }

    [Fact]
    public async Task A_refused_patch_is_retried_later_and_reads_the_rotated_token()
    {
        var server = new FakeApiServer { Status = HttpStatusCode.Forbidden };
        var clock = new ManualClock();
        using var updater = new PodDeletionCost(Location(), server, () => 1, clock, NullLogger<PodDeletionCost>.Instance);

        Assert.False(await updater.UpdateAsync(CancellationToken.None));
        Assert.Null(updater.Patched);
        clock.Now += TimeSpan.FromSeconds(1);
        Assert.False(await updater.UpdateAsync(CancellationToken.None)); // throttled: no request
        Assert.Single(server.Requests);

        server.Status = HttpStatusCode.OK;
        File.WriteAllText(Path.Combine(_serviceAccount, "token"), "token-2");
        clock.Now += TimeSpan.FromSeconds(5);
        Assert.True(await updater.UpdateAsync(CancellationToken.None));
        Assert.Equal("Bearer token-2", server.Requests[^1].Authorization);
        Assert.Equal(1, updater.Patched);
    }

    [Fact]
    public async Task An_unreachable_api_server_does_not_throw()
    {
        using var updater = new PodDeletionCost(Location(), new ThrowingHandler(), () => 1, new ManualClock(), NullLogger<PodDeletionCost>.Instance);
        Assert.False(await updater.UpdateAsync(CancellationToken.None));
    }

    [Fact]
    public async Task Over_tls_it_trusts_the_cluster_ca_from_the_service_account_and_nothing_else()
    {
        using var clusterCa = CreateCa("cluster-ca");
        using var otherCa = CreateCa("other-ca");
        using var serverCertificate = CreateServerCertificate(clusterCa);
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var port = ((IPEndPoint)listener.LocalEndpoint).Port;
        var bodies = new List<string>();
        var handshakeErrors = new List<string>();
        using var stop = new CancellationTokenSource();
        var server = Task.Run(async () =>
        {
            while (!stop.IsCancellationRequested)
            {
                using var client = await listener.AcceptTcpClientAsync(stop.Token);
                try
                {
                    await using var tls = new SslStream(client.GetStream());
                    await tls.AuthenticateAsServerAsync(serverCertificate);
                    var request = await ReadRequestAsync(tls);
                    if (request.Length == 0)
                        continue; // TLS 1.3: the client refused the certificate after the server's side of the handshake
                    lock (bodies)
                        bodies.Add(request);
                    await tls.WriteAsync(Encoding.ASCII.GetBytes("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"));
                }
                catch (Exception e) when (!stop.IsCancellationRequested)
                {
                    lock (bodies)
                        handshakeErrors.Add(e.GetType().Name); // the client refused the certificate
                }
            }
        });

        File.WriteAllText(Path.Combine(_serviceAccount, "token"), "tls-token");
        var env = new Dictionary<string, string> { ["KUBERNETES_SERVICE_HOST"] = "127.0.0.1", ["KUBERNETES_SERVICE_PORT"] = port.ToString(System.Globalization.CultureInfo.InvariantCulture), [PodLocation.PodNameVariable] = "pod-1", [PodLocation.PodNamespaceVariable] = "runner" };

        File.WriteAllText(Path.Combine(_serviceAccount, "ca.crt"), otherCa.ExportCertificatePem());
        var wrongCa = PodLocation.FromEnvironment(k => env.GetValueOrDefault(k), _serviceAccount)!;
        using (var updater = new PodDeletionCost(wrongCa, wrongCa.CreateHandler(), () => 2, new ManualClock(), NullLogger<PodDeletionCost>.Instance))
            Assert.False(await updater.UpdateAsync(CancellationToken.None)); // a server the cluster CA did not sign gets nothing

        File.WriteAllText(Path.Combine(_serviceAccount, "ca.crt"), clusterCa.ExportCertificatePem());
        var location = PodLocation.FromEnvironment(k => env.GetValueOrDefault(k), _serviceAccount)!;
        var log = new ListLogger();
        using (var updater = new PodDeletionCost(location, location.CreateHandler(), () => 2, new ManualClock(), log))
            Assert.True(await updater.UpdateAsync(CancellationToken.None), string.Join("\n", log.Lines) + " / server: " + string.Join(", ", handshakeErrors));

        await stop.CancelAsync();
        listener.Stop();
        await Assert.ThrowsAnyAsync<Exception>(() => server);
        var request = Assert.Single(bodies);
        Assert.StartsWith("PATCH /api/v1/namespaces/runner/pods/pod-1 HTTP/1.1", request, StringComparison.Ordinal);
        Assert.Contains("Authorization: Bearer tls-token", request, StringComparison.Ordinal);
        Assert.Contains("Content-Type: application/merge-patch+json", request, StringComparison.OrdinalIgnoreCase);
        Assert.EndsWith(PodDeletionCost.PatchBody(2), request, StringComparison.Ordinal);
    }

    sealed class ListLogger : Microsoft.Extensions.Logging.ILogger<PodDeletionCost>
    {
        public List<string> Lines { get; } = [];
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;
        public bool IsEnabled(Microsoft.Extensions.Logging.LogLevel logLevel) => true;
        public void Log<TState>(Microsoft.Extensions.Logging.LogLevel logLevel, Microsoft.Extensions.Logging.EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter) =>
            Lines.Add(formatter(state, exception));
    }

    static async Task<string> ReadRequestAsync(Stream stream)
    {
        var buffer = new byte[8192];
        var text = new StringBuilder();
        int contentLength = -1, headerEnd = -1;
        while (true)
        {
            var read = await stream.ReadAsync(buffer);
            if (read == 0)
                break;
            text.Append(Encoding.UTF8.GetString(buffer, 0, read));
            var all = text.ToString();
            if (headerEnd < 0 && (headerEnd = all.IndexOf("\r\n\r\n", StringComparison.Ordinal)) >= 0)
            {
                var header = all[..headerEnd].Split("\r\n").FirstOrDefault(l => l.StartsWith("Content-Length:", StringComparison.OrdinalIgnoreCase));
                contentLength = header is null ? 0 : int.Parse(header["Content-Length:".Length..].Trim(), System.Globalization.CultureInfo.InvariantCulture);
            }
            if (headerEnd >= 0 && Encoding.UTF8.GetByteCount(all[(headerEnd + 4)..]) >= contentLength)
                return all;
        }
        return text.ToString();
    }

    static X509Certificate2 CreateCa(string name)
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest($"CN={name}", key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, false, 0, true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign | X509KeyUsageFlags.CrlSign, true));
        return request.CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddDays(1));
    }

    static X509Certificate2 CreateServerCertificate(X509Certificate2 ca)
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest("CN=kube-apiserver", key, HashAlgorithmName.SHA256);
        var names = new SubjectAlternativeNameBuilder();
        names.AddIpAddress(IPAddress.Loopback);
        request.CertificateExtensions.Add(names.Build());
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new Oid("1.3.6.1.5.5.7.3.1")], false));
        using var issued = request.Create(ca, DateTimeOffset.UtcNow.AddHours(-1), DateTimeOffset.UtcNow.AddHours(12), RandomNumberGenerator.GetBytes(8));
        using var withKey = issued.CopyWithPrivateKey(key);
        // SslStream on Linux wants a certificate whose key it can use: round-trip through PKCS#12.
        return X509CertificateLoader.LoadPkcs12(withKey.Export(X509ContentType.Pkcs12), null);
    }

    sealed class ThrowingHandler : HttpMessageHandler
    {
        protected override Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken) =>
            throw new HttpRequestException("connection refused");
    }
}
