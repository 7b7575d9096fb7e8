using System.Globalization;
using System.Text.RegularExpressions;

namespace MergeDsl.Core.Checkpoints;

/// <summary>Byte counts as people write them: "5GB" (decimal, as Hugging Face uses), "2GiB" (binary), "1048576".</summary>
public static partial class ByteSize
{
    [GeneratedRegex(@"^\s*(?<n>[0-9]+(?:\.[0-9]+)?)\s*(?<u>[A-Za-z]*)\s*$")]
    private static partial Regex Pattern();

    static readonly Dictionary<string, long> Units = new(StringComparer.OrdinalIgnoreCase)
    {
        [""] = 1, ["B"] = 1,
        ["K"] = 1_000, ["KB"] = 1_000, ["KiB"] = 1L << 10,
        ["M"] = 1_000_000, ["MB"] = 1_000_000, ["MiB"] = 1L << 20,
        ["G"] = 1_000_000_000, ["GB"] = 1_000_000_000, ["GiB"] = 1L << 30,
        ["T"] = 1_000_000_000_000, ["TB"] = 1_000_000_000_000, ["TiB"] = 1L << 40,
    };

    /// <summary>Parses "5GB", "500MB", "2GiB", "1.5GB", "1048576"; throws <see cref="ArgumentException"/> otherwise.</summary>
    public static long Parse(string text)
    {
        var m = Pattern().Match(text ?? "");
        if (!m.Success || !Units.TryGetValue(m.Groups["u"].Value, out long unit))
            throw new ArgumentException($"'{text}' is not a byte size (examples: 5GB, 500MB, 2GiB, 1048576)", nameof(text));
        // Digits beyond decimal's range (or a product past it) are simply too large, not an arithmetic fault.
        if (!decimal.TryParse(m.Groups["n"].Value, NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out decimal number)
            || number > long.MaxValue / unit)
            throw new ArgumentException($"'{text}' is too large a byte size (at most {long.MaxValue} bytes)", nameof(text));
        decimal value = number * unit;
        if (value != decimal.Truncate(value))
            throw new ArgumentException($"'{text}' is not a whole number of bytes", nameof(text));
        return (long)value;
    }

    /// <summary>Formats with decimal units: "512 B", "1.5 MB", "5 GB".</summary>
    public static string Format(long bytes)
    {
        string[] names = ["B", "KB", "MB", "GB", "TB", "PB"];
        double v = bytes;
        int k = 0;
        while (Math.Abs(v) >= 1000 && k < names.Length - 1) { v /= 1000; k++; }
        return k == 0 ? $"{bytes} B" : v.ToString("0.##", CultureInfo.InvariantCulture) + " " + names[k];
    }
}
