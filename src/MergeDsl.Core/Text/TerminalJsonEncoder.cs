using System.Globalization;
using System.Text;
using System.Text.Encodings.Web;

namespace MergeDsl.Core.Text;

/// <summary>
/// A JSON string encoder for output that may reach a terminal: as
/// <see cref="JavaScriptEncoder.UnsafeRelaxedJsonEscaping"/> (readable non-ASCII names, control
/// characters escaped), and also escaping invisible format characters (Unicode category Cf, e.g. the
/// bidi overrides U+202E and isolates U+2066–U+2069) and line/paragraph separators, which every built-in
/// encoder passes through raw. The JSON still decodes to the exact text.
/// </summary>
public sealed class TerminalJsonEncoder : JavaScriptEncoder
{
    static readonly JavaScriptEncoder Inner = UnsafeRelaxedJsonEscaping;

    TerminalJsonEncoder() { }

    /// <summary>The encoder (stateless, thread-safe).</summary>
    public static TerminalJsonEncoder Instance { get; } = new();

    /// <inheritdoc/>
    public override int MaxOutputCharactersPerInputCharacter => Math.Max(Inner.MaxOutputCharactersPerInputCharacter, 12);

    /// <inheritdoc/>
    public override bool WillEncode(int unicodeScalar) => Hidden(unicodeScalar) || Inner.WillEncode(unicodeScalar);

    /// <inheritdoc/>
    public override unsafe int FindFirstCharacterToEncode(char* text, int textLength)
    {
        int inner = Inner.FindFirstCharacterToEncode(text, textLength);
        int limit = inner < 0 ? textLength : inner;
        for (int i = 0; i < limit; i++)
        {
            char c = text[i];
            if (char.IsHighSurrogate(c) && i + 1 < textLength && char.IsLowSurrogate(text[i + 1]))
            {
                if (Hidden(char.ConvertToUtf32(c, text[i + 1]))) return i;
                i++;
            }
            else if (Hidden(c)) return i;
        }
        return inner;
    }

    /// <inheritdoc/>
    public override unsafe bool TryEncodeUnicodeScalar(int unicodeScalar, char* buffer, int bufferLength, out int numberOfCharactersWritten)
    {
        if (!Hidden(unicodeScalar)) return Inner.TryEncodeUnicodeScalar(unicodeScalar, buffer, bufferLength, out numberOfCharactersWritten);
        Span<char> units = stackalloc char[2];
        int count = new Rune(unicodeScalar).EncodeToUtf16(units);
        numberOfCharactersWritten = 0;
        if (bufferLength < 6 * count) return false;
        for (int k = 0; k < count; k++)
        {
            var hex = ((int)units[k]).ToString("X4", CultureInfo.InvariantCulture);
            buffer[6 * k] = '\\';
            buffer[6 * k + 1] = 'u';
            for (int j = 0; j < 4; j++) buffer[6 * k + 2 + j] = hex[j];
        }
        numberOfCharactersWritten = 6 * count;
        return true;
    }

    static bool Hidden(int scalar) =>
        Rune.IsValid(scalar) && Rune.GetUnicodeCategory(new Rune(scalar)) is UnicodeCategory.Format or UnicodeCategory.LineSeparator or UnicodeCategory.ParagraphSeparator;
}
