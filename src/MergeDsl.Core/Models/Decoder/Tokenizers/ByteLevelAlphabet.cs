namespace MergeDsl.Core.Models.Decoder.Tokenizers;

/// <summary>
/// The byte ↔ character table of GPT-2's byte-level BPE (HF <c>tokenizers</c>' <c>ByteLevel</c> pre-tokenizer):
/// printable bytes '!'..'~', '¡'..'¬', '®'..'ÿ' stand for themselves; the other 68 bytes, in increasing
/// order, take the characters U+0100, U+0101, … so every byte is one visible character.
/// </summary>
public static class ByteLevelAlphabet
{
    static bool Printable(int b) => b is >= '!' and <= '~' or >= 0xA1 and <= 0xAC or >= 0xAE and <= 0xFF;

    /// <summary>The character standing for each byte value (index = byte).</summary>
    public static IReadOnlyList<char> Chars { get; } = Build();

    static char[] Build()
    {
        var chars = new char[256];
        int next = 256;
        for (int b = 0; b < 256; b++) chars[b] = Printable(b) ? (char)b : (char)next++;
        return chars;
    }
}
