using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace RunnerService.Contracts;

/// <summary>
/// Reads a time limit written either as a number of seconds (<c>30</c>, <c>0.5</c>, or the string <c>"30"</c>) or as
/// <c>[d.]hh:mm:ss[.fffffff]</c> (<c>"00:00:30"</c>); writes the latter, as System.Text.Json always has. Publishers in
/// other languages rarely have a TimeSpan; seconds are what they have.
/// </summary>
public sealed class TimeoutJsonConverter : JsonConverter<TimeSpan?>
{
    // A TimeSpan is at most about 10.7 million days; seconds beyond that cannot be represented.
    static readonly double MaxSeconds = TimeSpan.MaxValue.TotalSeconds;

    public override TimeSpan? Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options)
    {
        switch (reader.TokenType)
        {
            case JsonTokenType.Null:
                return null;
            case JsonTokenType.Number:
                return FromSeconds(reader.GetDouble());
            case JsonTokenType.String:
                var text = reader.GetString()!.Trim();
                // Just a number: seconds. (TimeSpan.Parse would read "30" as thirty days.)
                if (double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out var seconds))
                    return FromSeconds(seconds);
                if (text.Contains(':', StringComparison.Ordinal)
                    && TimeSpan.TryParseExact(text, "c", CultureInfo.InvariantCulture, out var value))
                    return value;
                throw new JsonException($"\"{text}\" is not a time limit: give seconds (30, 0.5) or \"[d.]hh:mm:ss[.fffffff]\" (\"00:00:30\")");
            default:
                throw new JsonException($"a time limit must be a number of seconds or a \"hh:mm:ss\" string, not {reader.TokenType}");
        }
    }

    public override void Write(Utf8JsonWriter writer, TimeSpan? value, JsonSerializerOptions options)
    {
        if (value is { } timeSpan)
            writer.WriteStringValue(timeSpan.ToString("c", CultureInfo.InvariantCulture));
        else
            writer.WriteNullValue();
    }

    static TimeSpan FromSeconds(double seconds)
    {
        if (double.IsNaN(seconds) || Math.Abs(seconds) >= MaxSeconds)
            throw new JsonException($"{seconds.ToString(CultureInfo.InvariantCulture)} seconds is out of range for a time limit");
        return TimeSpan.FromTicks((long)Math.Round(seconds * TimeSpan.TicksPerSecond));
    }
}
