using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using RunnerService.Worker;

namespace RunnerService.Tests;

[Trait("Category", "Unit")]
public class SpanExporterTests
{
    const string TraceParent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    [Theory]
    [InlineData(false)] // a port nobody listens on: refused at once
    [InlineData(true)] // a collector that takes the connection and never answers
    public async Task An_export_neither_blocks_its_caller_nor_outlasts_its_budget(bool silent)
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start(); // never accepts: the kernel completes the handshakes, nobody reads a request
        var endpoint = $"http://127.0.0.1:{((IPEndPoint)listener.LocalEndpoint).Port}/v1/traces";
        if (!silent)
            listener.Stop();
        var budget = TimeSpan.FromMilliseconds(300);
        var exporter = new SpanExporter(budget);
        // A first export compiles the HTTP stack (in this test process too); the budget is what is measured here.
        exporter.Export(Ended(endpoint));
        await exporter.DrainAsync();
        var span = Ended(endpoint);

        var watch = Stopwatch.StartNew();
        exporter.Export(span);
        var exportReturned = watch.Elapsed;
        await exporter.DrainAsync();
        var drained = watch.Elapsed;

        Assert.True(exportReturned < TimeSpan.FromMilliseconds(100), $"Export took {exportReturned.TotalMilliseconds} ms");
        if (silent)
            Assert.True(drained >= budget - TimeSpan.FromMilliseconds(20), $"the drain returned after {drained.TotalMilliseconds} ms, before the export ended");
        Assert.True(drained < budget + TimeSpan.FromSeconds(1), $"the drain took {drained.TotalMilliseconds} ms for a budget of {budget.TotalMilliseconds} ms");
    }

    static WorkerTracing Ended(string endpoint)
    {
        var span = WorkerTracing.Start(TraceParent, endpoint)!;
        span.End("echo", Guid.NewGuid(), null);
        return span;
    }
}
