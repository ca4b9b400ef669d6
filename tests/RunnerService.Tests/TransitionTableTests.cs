using RunnerService.Saga;

namespace RunnerService.Tests;

[Trait("Category", "Unit")]
public class TransitionTableTests
{
    [Fact]
    public void The_code_allows_exactly_the_transitions_documented_in_waiting_md()
    {
        var root = new DirectoryInfo(AppContext.BaseDirectory);
        while (root is not null && !File.Exists(Path.Combine(root.FullName, "RunnerService.sln")))
            root = root.Parent;
        Assert.NotNull(root);
        var text = File.ReadAllText(Path.Combine(root.FullName, "docs", "waiting.md"));
        var start = text.IndexOf("<!-- transitions:start -->", StringComparison.Ordinal);
        var end = text.IndexOf("<!-- transitions:end -->", StringComparison.Ordinal);
        var documented = text[start..end].Split('\n')
            .Select(l => l.Trim())
            .Where(l => l.StartsWith('|') && !l.StartsWith("| From", StringComparison.Ordinal) && !l.StartsWith("|--", StringComparison.Ordinal))
            .Select(l => l.Trim('|').Split('|'))
            .ToDictionary(c => c[0].Trim(), c => c[1].Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Order().ToArray());

        Assert.Equal(documented.Keys.Order(), InvocationTransitions.Allowed.Keys.Order());
        foreach (var (from, targets) in InvocationTransitions.Allowed)
            Assert.Equal(documented[from], targets.Order().ToArray());
    }

    [Fact]
    public void Final_statuses_allow_no_transition()
    {
        foreach (var final in InvocationTransitions.FinalStatuses)
            Assert.Empty(InvocationTransitions.Allowed[final]);
    }
}
