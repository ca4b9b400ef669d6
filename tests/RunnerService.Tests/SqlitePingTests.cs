using RunnerService.Saga.Persistence;

namespace RunnerService.Tests;

[Trait("Category", "Unit")]
public sealed class SqlitePingTests : IDisposable
{
    readonly DirectoryInfo _root = Directory.CreateTempSubdirectory("runner-sqlite-ping-");

    public void Dispose() => _root.Delete(recursive: true);

    [Fact]
    public async Task The_ping_fails_while_the_database_file_is_gone_even_with_pooled_connections_to_it_open()
    {
        var folder = Path.Combine(_root.FullName, "store");
        using var store = new SqliteSagaStore($"Data Source={Path.Combine(folder, "sagas.db")}");
        await store.InitializeAsync(CancellationToken.None);
        Assert.Null(await store.ReadAsync(Guid.NewGuid(), CancellationToken.None)); // leaves a pooled connection to the file
        Assert.True(await store.PingAsync(CancellationToken.None));

        Directory.Move(folder, folder + "-away");
        Assert.False(await store.PingAsync(CancellationToken.None));

        Directory.Move(folder + "-away", folder);
        Assert.True(await store.PingAsync(CancellationToken.None));
    }
}
