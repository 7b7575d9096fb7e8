using System.Text;
using Microsoft.ML.Tokenizers;

namespace MergeDsl.Core.Models.Decoder.Tokenizers;

/// <summary>A checkpoint's own tokenizer, run by Microsoft.ML.Tokenizers (BPE, SentencePiece or tiktoken).</summary>
public sealed class LibraryTokenizer : ITextTokenizer
{
    readonly Tokenizer inner;
    readonly NormalizationForm? normalization;

    /// <summary>Wraps <paramref name="inner"/>; <paramref name="normalization"/>: Unicode form applied before encoding (HF's NFC/NFKC normalizers).</summary>
    public LibraryTokenizer(Tokenizer inner, string source, int? bosId, int? eosId, NormalizationForm? normalization = null)
    {
        this.inner = inner;
        this.normalization = normalization;
        Source = source;
        BosId = bosId;
        EosId = eosId;
    }

    /// <summary>The library's tokenizer.</summary>
    public Tokenizer Inner => inner;
    /// <inheritdoc/>
    public string Source { get; }
    /// <inheritdoc/>
    public int? BosId { get; }
    /// <inheritdoc/>
    public int? EosId { get; }

    /// <inheritdoc/>
    public IReadOnlyList<int> Encode(string text)
        => inner.EncodeToIds(normalization is { } form ? text.Normalize(form) : text);

    /// <inheritdoc/>
    public string Decode(IEnumerable<int> ids)
        => inner.Decode(ids.Where(i => i != BosId && i != EosId)) ?? "";
}
