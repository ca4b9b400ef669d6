using RunnerService.TestSupport;

namespace RunnerService.Tests;

/// <summary>The tests that need a real PostgreSQL server: one server for all of them, started on first use.</summary>
[CollectionDefinition(Name)]
public sealed class PostgresCollection : ICollectionFixture<PostgresFixture>
{
    public const string Name = "postgres";
}
