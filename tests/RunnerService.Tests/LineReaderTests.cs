using System.Text;
using RunnerService.Processes;

namespace RunnerService.Tests;

[Trait("Category", "Unit")]
public class LineReaderTests
{
    [Fact]
    public async Task Splits_lines_across_reads_and_reports_the_end()
    {
        var reader = new LineReader(new MemoryStream(Encoding.UTF8.GetBytes("one\ntwo\n\nthree\n")), 1024);
        var lines = new List<string>();
        while (true)
        {
            var read = await reader.ReadLineAsync(CancellationToken.None);
            if (read.Kind == LineReadKind.EndOfStream)
                break;
            Assert.Equal(LineReadKind.Line, read.Kind);
            lines.Add(Encoding.UTF8.GetString(read.Bytes.Span));
        }
        Assert.Equal(["one", "two", "", "three"], lines);
    }

    [Fact]
    public async Task An_over_long_line_is_cut_off_at_the_limit_with_its_first_bytes()
    {
        var longLine = "{\"type\":\"result\",\"result\":\"" + new string('x', 100_000) + "\"}\n";
        var reader = new LineReader(new MemoryStream(Encoding.UTF8.GetBytes(longLine)), 4096);
        var read = await reader.ReadLineAsync(CancellationToken.None);
        Assert.Equal(LineReadKind.TooLong, read.Kind);
        Assert.StartsWith("{\"type\":\"result\"", Encoding.UTF8.GetString(read.Bytes.Span));
        Assert.True(read.Length > 4096);
    }

    [Fact]
    public async Task A_line_without_its_newline_at_the_end_is_reported_as_partial()
    {
        var reader = new LineReader(new MemoryStream(Encoding.UTF8.GetBytes("ok\n{\"type\":\"res")), 1024);
        Assert.Equal(LineReadKind.Line, (await reader.ReadLineAsync(CancellationToken.None)).Kind);
        var partial = await reader.ReadLineAsync(CancellationToken.None);
        Assert.Equal(LineReadKind.PartialLineAtEnd, partial.Kind);
        Assert.Equal("{\"type\":\"res", Encoding.UTF8.GetString(partial.Bytes.Span));
    }

    [Fact]
    public async Task Lines_up_to_the_limit_pass_through_a_growing_buffer()
    {
        var payload = new string('y', 200_000);
        var reader = new LineReader(new MemoryStream(Encoding.UTF8.GetBytes(payload + "\nnext\n")), 200_000);
        var first = await reader.ReadLineAsync(CancellationToken.None);
        Assert.Equal(LineReadKind.Line, first.Kind);
        Assert.Equal(200_000, first.Length);
        var second = await reader.ReadLineAsync(CancellationToken.None);
        Assert.Equal("next", Encoding.UTF8.GetString(second.Bytes.Span));
    }

    [Fact]
    public async Task After_an_endless_line_reading_goes_on_at_the_next_line_with_a_small_buffer()
    {
        var text = new string('x', 200_000) + "\nafter\n";
        var reader = new LineReader(new MemoryStream(Encoding.UTF8.GetBytes(text)), 1024);
        var cut = await reader.ReadLineAsync(CancellationToken.None);
        Assert.Equal(LineReadKind.TooLong, cut.Kind);
        Assert.True(cut.Bytes.Length <= 4096);
        var next = await reader.ReadLineAsync(CancellationToken.None);
        Assert.Equal(LineReadKind.Line, next.Kind);
        Assert.Equal("after", Encoding.UTF8.GetString(next.Bytes.Span));
        Assert.Equal(LineReadKind.EndOfStream, (await reader.ReadLineAsync(CancellationToken.None)).Kind);
    }
}
