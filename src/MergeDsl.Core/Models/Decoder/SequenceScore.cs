namespace MergeDsl.Core.Models.Decoder;

/// <summary>
/// Log-likelihoods (natural log) of the predicted tokens of one sequence: entry i is
/// log p(token i+1 | tokens 0..i), so a sequence of n tokens has n − 1 entries.
/// </summary>
/// <param name="TokenLogLikelihoods">log p(token i+1 | tokens 0..i) for each predicted token.</param>
public sealed record SequenceScore(IReadOnlyList<double> TokenLogLikelihoods)
{
    /// <summary>Tokens predicted.</summary>
    public int Tokens => TokenLogLikelihoods.Count;

    /// <summary>Σ log p.</summary>
    public double SumLogLikelihood => TokenLogLikelihoods.Sum();

    /// <summary>Mean log p per predicted token (NaN when none is predicted).</summary>
    public double MeanLogLikelihood => Tokens == 0 ? double.NaN : SumLogLikelihood / Tokens;

    /// <summary>
    /// Bits per byte of a text whose UTF-8 form has <paramref name="bytes"/> bytes: −Σ log₂ p / bytes.
    /// Comparable across tokenizers because the byte count does not depend on how the text was split.
    /// </summary>
    public double BitsPerByte(long bytes)
    {
        if (bytes <= 0) throw new ArgumentException($"bits per byte needs a positive byte count, got {bytes}");
        return -SumLogLikelihood / Math.Log(2) / bytes;
    }
}
