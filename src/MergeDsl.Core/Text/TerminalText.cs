using System.Globalization;
using System.Text;

namespace MergeDsl.Core.Text;

/// <summary>
/// Text from checkpoints (tensor names, metadata, messages quoting them) made safe to print on a
/// terminal: a file may hold escape sequences that retitle the window, clear the screen or reorder
/// what follows (bidi overrides), and names long enough to flood it.
/// </summary>
public static class TerminalText
{
    /// <summary>Default longest result, in characters (before the length note).</summary>
    public const int DefaultMaxLength = 4096;

    /// <summary>
    /// Escapes control characters (C0 including ESC and BEL, DEL, C1), bidi and other invisible
    /// formatting characters (Unicode category Cf, e.g. U+202E, U+2066–U+2069, U+200B), line and paragraph
    /// separators and lone surrogates visibly as <c>\xHH</c> / <c>\uHHHH</c>, and a backslash as <c>\\</c>
    /// so an escape cannot be forged. Text longer than <paramref name="maxLength"/> characters is cut
    /// there and ends with <c>… (N chars)</c>, N being the original length; only the kept prefix is
    /// scanned, so the cost does not grow with the input.
    /// </summary>
    /// <param name="text">Raw text; null gives an empty string.</param>
    /// <param name="maxLength">Longest result before the length note; at least 1.</param>
    public static string Sanitize(string? text, int maxLength = DefaultMaxLength)
    {
        if (string.IsNullOrEmpty(text)) return "";
        if (maxLength < 1) throw new ArgumentOutOfRangeException(nameof(maxLength), maxLength, "must be at least 1");
        var sb = new StringBuilder(Math.Min(text.Length, maxLength) + 16);
        int i = 0;
        for (; i < text.Length && sb.Length < maxLength; i++)
        {
            char c = text[i];
            if (char.IsHighSurrogate(c) && i + 1 < text.Length && char.IsLowSurrogate(text[i + 1]))
            {
                int cp = char.ConvertToUtf32(c, text[i + 1]);
                if (CharUnicodeInfo.GetUnicodeCategory(cp) == UnicodeCategory.Format) sb.Append("\\U").Append(cp.ToString("X8", CultureInfo.InvariantCulture));
                else sb.Append(c).Append(text[i + 1]);
                i++;
                continue;
            }
            if (c == '\\') sb.Append("\\\\");
            else if (c < 0x20 || c is >= '\x7f' and <= '\x9f') sb.Append("\\x").Append(((int)c).ToString("x2", CultureInfo.InvariantCulture));
            else if (NeedsEscape(c)) sb.Append("\\u").Append(((int)c).ToString("x4", CultureInfo.InvariantCulture));
            else sb.Append(c);
        }
        if (i < text.Length) sb.Append("… (").Append(text.Length.ToString(CultureInfo.InvariantCulture)).Append(" chars)");
        return sb.ToString();
    }

    static bool NeedsEscape(char c) =>
        char.IsSurrogate(c) // unpaired (pairs are handled by the caller)
        || c is '\u2028' or '\u2029'
        || CharUnicodeInfo.GetUnicodeCategory(c) == UnicodeCategory.Format;
}
