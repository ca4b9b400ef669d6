using System.Net;
using System.Text.Json;
using Microsoft.Extensions.Logging.Abstractions;
using RunnerService.Hosting;

namespace RunnerService.Tests;

/// <summary>The updater of <c>controller.kubernetes.io/pod-deletion-cost</c>, against a fake API server.</summary>
[Trait("Category", "Unit")]
public sealed class PodDeletionCostTests : IDisposable
{
    readonly string _serviceAccount = Directory.CreateTempSubdirectory("sa-").FullName;

    sealed class ManualClock : TimeProvider
    {
        public DateTimeOffset Now { get; set; } = new(2026, 11, 29, 12, 0, 0, TimeSpan.Zero);

        public override DateTimeOffset GetUtcNow() => Now;
    }

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

    sealed class ThrowingHandler : HttpMessageHandler
    {
        protected override Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken) =>
            throw new HttpRequestException("connection refused");
    }
}
