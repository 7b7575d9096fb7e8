namespace MergeDsl.Core.Models.Decoder.Tokenizers;

/// <summary>Text ↔ token ids for a decoder model.</summary>
public interface ITextTokenizer
{
    /// <summary>The file it was read from (or a name), for messages.</summary>
    string Source { get; }

    /// <summary>The id put before a text when scoring or generating (null: this tokenizer adds none).</summary>
    int? BosId { get; }

    /// <summary>The end-of-sequence id, where one is known (generation stops at it).</summary>
    int? EosId { get; }

    /// <summary>The text's ids, without BOS/EOS.</summary>
    IReadOnlyList<int> Encode(string text);

    /// <summary>The text of <paramref name="ids"/>, special tokens left out.</summary>
    string Decode(IEnumerable<int> ids);
}
