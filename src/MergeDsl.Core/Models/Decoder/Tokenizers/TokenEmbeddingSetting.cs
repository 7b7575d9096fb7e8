namespace MergeDsl.Core.Models.Decoder.Tokenizers;

/// <summary>Where a configured token's embedding row comes from (mergekit's <c>tokenizer.tokens.&lt;token&gt;.source</c>).</summary>
public enum TokenEmbeddingKind
{
    /// <summary>The source model's own row of the token (<c>source: &lt;model&gt;</c>); the model must have the token.</summary>
    Model,
    /// <summary>A given row of the source model (<c>kind: model_token</c> with <c>token_id</c> or <c>token</c>).</summary>
    ModelToken,
    /// <summary>Zeros (<c>kind: zero</c>).</summary>
    Zero,
}

/// <summary>
/// One entry of mergekit's per-token embedding settings. A token absent from the output vocabulary is added to it (as
/// a non-special token, mergekit's <c>add_tokens</c>). Without <paramref name="Force"/>, a model that has the token
/// keeps its own row and only models lacking it take the configured row; with it, every model takes the configured row.
/// </summary>
/// <param name="Token">The output token the setting applies to.</param>
/// <param name="Kind">Where the row comes from.</param>
/// <param name="Model">The source model's index among the models given to <see cref="VocabularyUnion.Build"/> (unused for <see cref="TokenEmbeddingKind.Zero"/>).</param>
/// <param name="SourceTokenId">For <see cref="TokenEmbeddingKind.ModelToken"/>: the row (token id) of the source model's matrices.</param>
/// <param name="SourceToken">For <see cref="TokenEmbeddingKind.ModelToken"/>: a token of the source model's vocabulary whose row is taken (instead of an id).</param>
/// <param name="Force">Replace the row in every model, also in models that have the token.</param>
public sealed record TokenEmbeddingSetting(
    string Token, TokenEmbeddingKind Kind, int Model = -1, int? SourceTokenId = null, string? SourceToken = null, bool Force = false);
