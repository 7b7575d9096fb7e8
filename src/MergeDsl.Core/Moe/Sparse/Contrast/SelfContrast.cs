using TorchSharp;
using static TorchSharp.torch;
using MergeDsl.Core.Torch;

namespace MergeDsl.Core.Moe.Sparse.Contrast;

/// <summary>
/// Self-contrast of a sparse MoE (SCMoE, Shi et al. 2024): the same model run twice on the same tokens, once
/// with its strong routing (top-2) and once with a weak one (top-1, or one lower-ranked expert), and the
/// next-token scores contrasted:
/// <code>
/// score(v) = (1 + β)·log p_strong(v) − β·log p_weak(v)   for v in V_α,   −∞ otherwise,
/// V_α = { v : p_strong(v) ≥ α · max_w p_strong(w) }      (the plausibility constraint)
/// </code>
/// SCMoE contrasts raw logits; log-probabilities differ from logits by one constant per distribution, so the
/// argmax and the softmax of the scores are the same either way. Greedy SCMoE decoding takes the argmax;
/// scoring uses softmax(score), a distribution over V_α (with α = 0 over the whole vocabulary).
/// β = 0 is plain greedy on the strong model (its argmax is always plausible).
/// </summary>
public static class SelfContrast
{
    /// <summary>Throws <see cref="ArgumentException"/> naming β or α unless β ≥ 0 and 0 ≤ α ≤ 1 (finite).</summary>
    public static void Validate(double beta, double alpha)
    {
        if (!(beta >= 0) || double.IsInfinity(beta)) throw new ArgumentException($"--beta must be a finite number ≥ 0, got {beta}");
        if (!(alpha >= 0 && alpha <= 1)) throw new ArgumentException($"--alpha must be in [0, 1], got {alpha}");
    }

    /// <summary>
    /// The contrasted scores [.., V] (float64) from strong and weak logits of the same shape: finite on V_α, −∞ elsewhere.
    /// </summary>
    public static Tensor Scores(Tensor strongLogits, Tensor weakLogits, double beta, double alpha)
    {
        Validate(beta, alpha);
        if (!strongLogits.shape.SequenceEqual(weakLogits.shape))
            throw new ArgumentException($"self-contrast: strong logits [{string.Join(", ", strongLogits.shape)}] and weak logits [{string.Join(", ", weakLogits.shape)}] differ in shape");
        using var scope = NewDisposeScope();
        var ls = strongLogits.to_type(ScalarType.Float64).log_softmax(-1);
        var lw = weakLogits.to_type(ScalarType.Float64).log_softmax(-1);
        var scores = ls.Times(1 + beta).sub(lw.Times(beta));
        if (alpha > 0)
        {
            var cutoff = ls.max(-1, keepdim: true).values.Plus(Math.Log(alpha));
            using var minusInfinity = double.NegativeInfinity.ToScalar();
            scores = scores.masked_fill(ls.lt(cutoff), minusInfinity);
        }
        return scores.MoveToOuterDisposeScope();
    }

    /// <summary>log softmax of <see cref="Scores"/>: the contrasted distribution's log-probabilities (−∞ outside V_α).</summary>
    public static Tensor LogProbs(Tensor strongLogits, Tensor weakLogits, double beta, double alpha)
    {
        using var scope = NewDisposeScope();
        return Scores(strongLogits, weakLogits, beta, alpha).log_softmax(-1).MoveToOuterDisposeScope();
    }
}
