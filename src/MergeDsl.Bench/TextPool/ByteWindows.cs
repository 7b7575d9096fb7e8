using static TorchSharp.torch;

namespace MergeDsl.Bench.TextPool;

/// <summary>Byte windows of a text as token ids (the byte tokenizer's ids are the byte values).</summary>
static class ByteWindows
{
    /// <summary>
    /// <paramref name="batch"/> windows of <paramref name="context"/> + 1 bytes at random offsets: inputs [B, C]
    /// and next-byte targets [B, C].
    /// </summary>
    public static (Tensor Inputs, Tensor Targets) Random(byte[] text, int context, int batch, Random rng)
    {
        int span = context + 1;
        if (text.Length < span) throw new ArgumentException($"a text of {text.Length} bytes is shorter than one window of {span}");
        var ids = new long[batch * span];
        for (int b = 0; b < batch; b++)
        {
            int start = rng.Next(text.Length - span + 1);
            for (int t = 0; t < span; t++) ids[b * span + t] = text[start + t];
        }
        var all = tensor(ids, [batch, span]);
        return (all.narrow(1, 0, context), all.narrow(1, 1, context));
    }

    /// <summary>
    /// Consecutive windows covering the text: window k holds bytes kC .. kC + C (C + 1 bytes; the last may be
    /// shorter), so every byte after the first is predicted exactly once, from the bytes before it in its window.
    /// </summary>
    public static IEnumerable<long[]> Consecutive(byte[] text, int context)
    {
        for (int start = 0; start + 1 < text.Length; start += context)
        {
            int len = Math.Min(context + 1, text.Length - start);
            var w = new long[len];
            for (int t = 0; t < len; t++) w[t] = text[start + t];
            yield return w;
        }
    }
}
