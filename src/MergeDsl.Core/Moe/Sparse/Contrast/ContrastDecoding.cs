using TorchSharp;
using static TorchSharp.torch;
using MergeDsl.Core.Models.Decoder;

namespace MergeDsl.Core.Moe.Sparse.Contrast;

/// <summary>Self-contrast settings: the two routings and the contrast's β and α.</summary>
/// <param name="Strong">The strong routing (SCMoE: the model's top-2).</param>
/// <param name="Weak">The weak routing (SCMoE's default: top-1).</param>
/// <param name="Beta">β ≥ 0: how much the weak prediction is subtracted (0: the strong model alone).</param>
/// <param name="Alpha">α in [0, 1]: the plausibility constraint (0: every token plausible).</param>
public sealed record SelfContrastSettings(RoutingPolicy Strong, RoutingPolicy Weak, double Beta, double Alpha)
{
    /// <summary>Throws <see cref="ArgumentException"/> naming the bad value for a model of <paramref name="numExperts"/> experts.</summary>
    public SelfContrastSettings Validate(int numExperts)
    {
        SelfContrast.Validate(Beta, Alpha);
        Strong.Validate(numExperts);
        Weak.Validate(numExperts);
        return this;
    }
}

/// <summary>The log-likelihood of a token stream under the contrasted distribution.</summary>
/// <param name="SumLogLikelihood">Σ ln p over the predicted tokens (−∞ when one fell outside the plausible set).</param>
/// <param name="Tokens">Tokens predicted.</param>
/// <param name="Outside">Predicted tokens outside the plausible set V_α (probability 0 under the contrast).</param>
public sealed record ContrastScore(double SumLogLikelihood, long Tokens, long Outside)
{
    /// <summary>−Σ log₂ p / <paramref name="bytes"/> (+∞ when a token fell outside V_α).</summary>
    public double BitsPerByte(long bytes) => -SumLogLikelihood / Math.Log(2) / bytes;
}

/// <summary>
/// Scoring and greedy generation with SCMoE's self-contrast (<see cref="SelfContrast"/>) on a sparse decoder.
/// Each pass runs the model twice, with the strong and with the weak routing; the model's routing is restored
/// afterwards.
/// </summary>
public static class ContrastDecoding
{
    /// <summary>
    /// Scores <paramref name="tokens"/> (BOS included when the tokenizer has one) in windows of
    /// <paramref name="window"/> tokens that overlap by one, so every token after the first is predicted once,
    /// from the tokens before it in its window. Each prediction is the contrasted distribution
    /// softmax((1+β)·log p_strong − β·log p_weak) over V_α. <paramref name="batch"/> windows run per pass.
    /// </summary>
    /// <exception cref="ArgumentException">A dense model, fewer than two tokens, a window below 2, or bad settings.</exception>
    public static ContrastScore Score(DecoderModel model, IReadOnlyList<int> tokens, int window, SelfContrastSettings settings, int batch = 16)
    {
        var blocks = SparseMoe.Blocks(model);
        if (blocks.Count == 0) throw new ArgumentException($"{model.Label}: {model.Config.Family.Architecture()} is a dense model; self-contrast needs sparse MoE layers");
        settings.Validate(blocks.Min(b => b.NumExperts));
        if (tokens.Count < 2) throw new ArgumentException("self-contrast scoring needs at least two tokens");
        if (window < 2) throw new ArgumentException($"the scoring window must be at least 2 tokens, got {window}");
        if (batch < 1) throw new ArgumentException($"the scoring batch must be at least 1, got {batch}");
        model.CheckLength(window);
        var saved = blocks.Select(b => b.Routing).ToArray();
        double sum = 0;
        long count = 0, outside = 0;
        try
        {
            using var noGrad = no_grad();
            var starts = new List<int>();
            for (int start = 0; start < tokens.Count - 1; start += window - 1) starts.Add(start);
            // Windows of one length go through together (only the last can be shorter); causal attention keeps them independent.
            foreach (var group in starts.GroupBy(st => Math.Min(window, tokens.Count - st)))
                foreach (var chunk in group.Chunk(batch))
                {
                    using var scope = NewDisposeScope();
                    int len = group.Key;
                    var flat = chunk.SelectMany(st => tokens.Skip(st).Take(len)).Select(i => (long)i).ToArray();
                    var ids = torch.tensor(flat, [chunk.Length, len]);
                    var inputs = ids.narrow(1, 0, len - 1);
                    var targets = ids.narrow(1, 1, len - 1).unsqueeze(-1);
                    SparseMoe.SetRouting(model, settings.Strong);
                    var strong = model.Forward(inputs);
                    var weak = strong;
                    if (settings.Beta != 0)
                    {
                        SparseMoe.SetRouting(model, settings.Weak);
                        weak = model.Forward(inputs);
                    }
                    var picked = SelfContrast.LogProbs(strong, weak, settings.Beta, settings.Alpha).gather(-1, targets);
                    var isOut = picked.isneginf();
                    outside += isOut.sum().item<long>();
                    using var zero = 0.0.ToScalar();
                    sum += picked.masked_fill(isOut, zero).sum().item<double>();
                    count += (long)chunk.Length * (len - 1);
                }
        }
        finally
        {
            for (int i = 0; i < blocks.Count; i++) blocks[i].Routing = saved[i];
        }
        return new ContrastScore(outside > 0 ? double.NegativeInfinity : sum, count, outside);
    }

    /// <summary>
    /// Greedy SCMoE decoding: up to <paramref name="maxNewTokens"/> tokens, each the argmax of the contrasted
    /// scores. Two KV caches (strong and weak passes), so each step runs one new position twice.
    /// </summary>
    /// <exception cref="ArgumentException">A dense model, an empty prompt, bad settings, or too long a sequence.</exception>
    public static IReadOnlyList<int> Generate(DecoderModel model, IReadOnlyList<int> prompt, int maxNewTokens, SelfContrastSettings settings, int? stopAtEos = null)
    {
        var blocks = SparseMoe.Blocks(model);
        if (blocks.Count == 0) throw new ArgumentException($"{model.Label}: {model.Config.Family.Architecture()} is a dense model; self-contrast needs sparse MoE layers");
        settings.Validate(blocks.Min(b => b.NumExperts));
        if (maxNewTokens < 0) throw new ArgumentException($"max new tokens must be 0 or more, got {maxNewTokens}");
        if (prompt.Count == 0) throw new ArgumentException("the prompt is empty; generation needs at least one token (e.g. BOS)");
        model.CheckLength(prompt.Count + maxNewTokens);
        var saved = blocks.Select(b => b.Routing).ToArray();
        var added = new List<int>();
        try
        {
            using var noGrad = no_grad();
            long capacity = prompt.Count + Math.Max(1, maxNewTokens);
            using var strongCache = new KvCache(model.Config, 1, capacity);
            using var weakCache = new KvCache(model.Config, 1, capacity);
            var feed = prompt.ToList();
            for (int step = 0; step < maxNewTokens; step++)
            {
                using var scope = NewDisposeScope();
                var ids = torch.tensor(feed.Select(i => (long)i).ToArray(), [1, feed.Count]);
                SparseMoe.SetRouting(model, settings.Strong);
                var strong = model.Forward(ids, strongCache).select(0, 0).select(0, feed.Count - 1);
                SparseMoe.SetRouting(model, settings.Weak);
                var weak = model.Forward(ids, weakCache).select(0, 0).select(0, feed.Count - 1);
                int next = (int)SelfContrast.Scores(strong, weak, settings.Beta, settings.Alpha).argmax().item<long>();
                added.Add(next);
                if (stopAtEos == next) break;
                feed = [next];
            }
        }
        finally
        {
            for (int i = 0; i < blocks.Count; i++) blocks[i].Routing = saved[i];
        }
        return added;
    }
}
