using System.Collections;
using System.Text.Json;

namespace RunnerService.Worker;

/// <summary>Results of a successful wait, in the order the handles were given; deconstructs into variables.</summary>
public sealed class WaitResults(IReadOnlyList<JsonElement> results) : IReadOnlyList<JsonElement>
{
    public JsonElement this[int index] => results[index];
    public int Count => results.Count;
    public IEnumerator<JsonElement> GetEnumerator() => results.GetEnumerator();
    IEnumerator IEnumerable.GetEnumerator() => GetEnumerator();

    public void Deconstruct(out JsonElement first, out JsonElement second)
    {
        first = results[0];
        second = results[1];
    }

    public void Deconstruct(out JsonElement first, out JsonElement second, out JsonElement third)
    {
        first = results[0];
        second = results[1];
        third = results[2];
    }
}
