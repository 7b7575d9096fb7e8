using MergeDsl.Core.Models.Decoder;
using MergeDsl.Core.Models.Decoder.Tokenizers;
using MergeDsl.Core.Ops;
using static TorchSharp.torch;

namespace MergeDsl.Core.Moe.Sparse.Upcycling;

/// <summary>
/// Router rows of an upcycled sparse MoE, computed as mergekit-moe computes them (see docs/mergekit.md,
/// "mergekit-moe"). Every result is float32; rows of the prompt-based modes have unit L2 norm.
/// </summary>
public static class GateVectors
{
    /// <summary>
    /// The token ids a prompt is run as: the tokenizer's BOS id (when it has one) followed by the prompt's ids, as
    /// mergekit prepends the BOS text and tokenizes without adding special tokens.
    /// </summary>
    public static IReadOnlyList<int> PromptIds(ITextTokenizer tokenizer, string prompt)
    {
        var ids = tokenizer.Encode(prompt);
        return tokenizer.BosId is int bos ? ids.Prepend(bos).ToList() : ids.ToList();
    }

    /// <summary>
    /// The residual stream entering each decoder layer for one sequence: [layers, tokens, hidden], entry i being the
    /// embedding output for layer 0 and layer i−1's output otherwise. This is transformers'
    /// <c>output_hidden_states</c> without its last entry, which mergekit-moe uses; it is the input of each layer's
    /// <c>input_layernorm</c>, not the (normalised, post-attention) input of its MLP.
    /// </summary>
    public static Tensor LayerInputs(DecoderModel model, IReadOnlyList<int> ids)
    {
        model.CheckLength(ids.Count);
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        var cfg = model.Config;
        using var rope = RotaryEmbedding.FromConfig(cfg);
        var embed = model.ParametersByName()["model.embed_tokens.weight"];
        using var idx = tensor(ids.Select(i => (long)i).ToArray(), ScalarType.Int64);
        if (ids.Any(i => i < 0 || i >= cfg.VocabSize))
            throw new ArgumentException($"{model.Label}: a prompt token id is outside the vocabulary (vocab_size {cfg.VocabSize})");
        var x = embed.index_select(0, idx).unsqueeze(0);
        var states = new List<Tensor>(model.Layers.Count);
        foreach (var layer in model.Layers)
        {
            states.Add(x[0].to_type(ScalarType.Float32));
            x = layer.Forward(x, 0, rope, null);
        }
        return stack(states).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// One prompt set's per-layer vector [layers, hidden]: for each prompt the residual stream entering each layer at
    /// its last token (<paramref name="average"/>: the mean over its tokens), averaged over the prompts.
    /// </summary>
    public static Tensor HiddenMean(DecoderModel model, ITextTokenizer tokenizer, IReadOnlyList<string> prompts, bool average)
    {
        if (prompts.Count == 0) throw new ArgumentException("no prompts to average");
        using var scope = NewDisposeScope();
        Tensor? sum = null;
        foreach (var p in prompts)
        {
            var ids = PromptIds(tokenizer, p);
            if (ids.Count == 0) throw new ArgumentException($"prompt '{p}' has no tokens");
            var states = LayerInputs(model, ids);
            var v = average ? states.mean([1]) : states[.., -1, ..];
            sum = sum is null ? v : sum.add(v);
        }
        return sum!.div(prompts.Count).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// <c>cheap_embed</c>'s vector of one prompt set [hidden]: the sum of the embedding rows of every token of every
    /// prompt (BOS included), L2-normalised.
    /// </summary>
    public static Tensor CheapEmbedding(Tensor embedding, ITextTokenizer tokenizer, IReadOnlyList<string> prompts)
    {
        using var scope = NewDisposeScope();
        var ids = prompts.SelectMany(p => PromptIds(tokenizer, p)).Select(i => (long)i).ToArray();
        if (ids.Any(i => i < 0 || i >= embedding.shape[0]))
            throw new ArgumentException($"a prompt token id is outside the embedding's {embedding.shape[0]} rows");
        var sum = embedding.to_type(ScalarType.Float32).index_select(0, tensor(ids, ScalarType.Int64)).sum([0]);
        return Normalise(sum).MoveToOuterDisposeScope();
    }

    /// <summary>Divides each row (last dimension) by its L2 norm, clamped below at 1e-8 as mergekit does.</summary>
    public static Tensor Normalise(Tensor rows) => rows.div(rows.norm(-1, true, 2).clamp_min(1e-8));

    /// <summary>
    /// The rows of one expert [layers, hidden] from its prompts: positives minus negatives (when any), normalised.
    /// <paramref name="perPromptSet"/> gives a prompt set's [layers, hidden] (or [hidden], broadcast) vector.
    /// </summary>
    public static Tensor ExpertRows(UpcycleExpert expert, int layers, Func<IReadOnlyList<string>, Tensor> perPromptSet)
    {
        using var scope = NewDisposeScope();
        var v = perPromptSet(expert.PositivePrompts);
        if (expert.NegativePrompts.Count > 0) v = v.sub(perPromptSet(expert.NegativePrompts));
        if (v.dim() == 1) v = v.unsqueeze(0).expand(layers, -1);
        return Normalise(v).contiguous().MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Seeded random rows [layers, experts, hidden]: N(0, 1) (<c>random</c>) or U(−1/√hidden, 1/√hidden)
    /// (<c>uniform_random</c>). Layer i draws from its own generator, so a layer's rows do not depend on the others.
    /// </summary>
    public static Tensor Random(int layers, int experts, int hidden, long seed, bool uniform)
    {
        using var scope = NewDisposeScope();
        var perLayer = new List<Tensor>(layers);
        double bound = 1.0 / Math.Sqrt(hidden);
        for (int i = 0; i < layers; i++)
        {
            using var gen = new TorchSharp.torch.Generator(Seeding.For(seed, "router", i));
            perLayer.Add(uniform
                ? rand([experts, hidden], generator: gen).mul(2 * bound).sub(bound)
                : randn([experts, hidden], generator: gen));
        }
        return stack(perLayer).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Every gated expert's rows for <paramref name="mode"/>: [layers, experts, hidden]. The prompt-based modes read
    /// <paramref name="model"/> (hidden) or <paramref name="embedding"/> (cheap_embed) with <paramref name="tokenizer"/>.
    /// </summary>
    public static Tensor Compute(GateMode mode, IReadOnlyList<UpcycleExpert> experts, DecoderConfig config, long seed,
        DecoderModel? model, Tensor? embedding, ITextTokenizer? tokenizer)
    {
        int layers = config.NumHiddenLayers;
        switch (mode)
        {
            case GateMode.Random or GateMode.UniformRandom:
                return Random(layers, experts.Count, config.HiddenSize, seed, mode == GateMode.UniformRandom);
            case GateMode.CheapEmbed:
            {
                var e = embedding ?? throw new ArgumentNullException(nameof(embedding));
                var t = tokenizer ?? throw new ArgumentNullException(nameof(tokenizer));
                using var scope = NewDisposeScope();
                return stack(experts.Select(x => ExpertRows(x, layers, ps => CheapEmbedding(e, t, ps))).ToArray(), 1).MoveToOuterDisposeScope();
            }
            default:
            {
                var m = model ?? throw new ArgumentNullException(nameof(model));
                var t = tokenizer ?? throw new ArgumentNullException(nameof(tokenizer));
                bool average = mode == GateMode.HiddenAverage;
                using var scope = NewDisposeScope();
                return stack(experts.Select(x => ExpertRows(x, layers, ps => HiddenMean(m, t, ps, average))).ToArray(), 1).MoveToOuterDisposeScope();
            }
        }
    }
}
