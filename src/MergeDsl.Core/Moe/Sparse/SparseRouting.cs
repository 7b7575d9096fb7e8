using TorchSharp;
using static TorchSharp.torch;

namespace MergeDsl.Core.Moe.Sparse;

/// <summary>The routing arithmetic of the sparse blocks, on router probabilities [tokens, experts].</summary>
public static class SparseRouting
{
    /// <summary>
    /// Which experts each token goes to (bool [tokens, experts]) under <paramref name="policy"/>. Top-p sorts each
    /// token's probabilities in descending order (stable: equal probabilities keep expert order) and keeps rank r while
    /// the sum of the ranks before it is below p (summed in float64), so the kept set is the smallest prefix reaching p;
    /// at least one and at most the policy's maximum.
    /// </summary>
    public static Tensor Select(Tensor probs, RoutingPolicy policy)
    {
        long n = probs.shape[0], e = probs.shape[1];
        policy.Validate((int)e);
        switch (policy)
        {
            case TopK k:
            {
                var (_, idx) = probs.topk(k.K, dim: -1);
                return torch.zeros(n, e, ScalarType.Bool, probs.device).scatter(1, idx, torch.ones(idx.shape, ScalarType.Bool, probs.device));
            }
            case TopP p:
            {
                var (sorted, idx) = probs.sort(-1, descending: true, stable: true);
                var s64 = sorted.to_type(ScalarType.Float64);
                var before = s64.cumsum(-1).sub(s64);
                var count = before.lt(p.P).sum(-1).clamp(1, p.MaxSelected((int)e));   // [N]
                var ranks = torch.arange(e, ScalarType.Int64, probs.device).unsqueeze(0);
                var keep = ranks.lt(count.unsqueeze(1));
                return torch.zeros(n, e, ScalarType.Bool, probs.device).scatter(1, idx, keep);
            }
            default:
                throw new ArgumentException($"routing {policy} is not implemented");
        }
    }

    /// <summary>
    /// The combination weights [tokens, experts]: the selected probabilities, renormalised to sum to 1 per token when
    /// <paramref name="renormalise"/>, then multiplied by <paramref name="scale"/>; zero off the selection.
    /// </summary>
    public static Tensor Weights(Tensor probs, Tensor selected, bool renormalise, double scale)
    {
        var w = probs.mul(selected.to_type(probs.dtype));
        if (renormalise) w = w.div(w.sum(-1, keepdim: true).clamp_min(1e-20));   // a token whose chosen probabilities underflow keeps weight 0, not NaN
        return scale == 1.0 ? w : w.mul(scale);
    }
}
