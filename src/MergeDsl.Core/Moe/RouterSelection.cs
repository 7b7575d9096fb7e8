using TorchSharp;
using static TorchSharp.torch;
using MergeDsl.Core.Torch;

namespace MergeDsl.Core.Moe;

/// <summary>How a router's scores choose experts.</summary>
public enum RoutingMode
{
    /// <summary>Every expert, with its weight.</summary>
    Dense,
    /// <summary>The K highest-scoring experts.</summary>
    TopK,
    /// <summary>The smallest set of experts (by descending probability) whose probability mass reaches p.</summary>
    TopP,
}

/// <summary>
/// Expert selection for any MoE module. For WEMoE (raw, unnormalised routing weights) the kept experts
/// keep their raw weights and the others get 0; top-p ranks experts by softmax(weights). For SMILE
/// (softmax probabilities) the kept probabilities are renormalised to sum to 1, as in FusionBench.
/// Ties in top-k go to the lower expert index (torch.topk order).
/// </summary>
/// <param name="Mode">Dense, top-k or top-p.</param>
/// <param name="K">Experts kept by top-k (1..N).</param>
/// <param name="P">Mass threshold of top-p, in (0, 1].</param>
public sealed record RouterSelection(RoutingMode Mode = RoutingMode.Dense, int K = 1, double P = 0.9)
{
    /// <summary>All experts.</summary>
    public static RouterSelection Dense { get; } = new();

    /// <summary>Top-k selection.</summary>
    public static RouterSelection TopKOf(int k) => new(RoutingMode.TopK, K: k);

    /// <summary>Top-p selection.</summary>
    public static RouterSelection TopPOf(double p) => new(RoutingMode.TopP, P: p);

    /// <summary>Throws on out-of-range K or P.</summary>
    public RouterSelection Validate(int numExperts)
    {
        if (Mode == RoutingMode.TopK && (K < 1 || K > numExperts))
            throw new ArgumentException($"routing top-k: k must be in 1..{numExperts}, got {K}");
        if (Mode == RoutingMode.TopP && !(P > 0 && P <= 1))
            throw new ArgumentException($"routing top-p: p must be in (0, 1], got {P}");
        return this;
    }

    /// <summary>Text form: <c>dense</c>, <c>top-k:2</c>, <c>top-p:0.9</c>.</summary>
    public override string ToString() => Mode switch
    {
        RoutingMode.TopK => $"top-k:{K}",
        RoutingMode.TopP => $"top-p:{P.ToString(System.Globalization.CultureInfo.InvariantCulture)}",
        _ => "dense",
    };

    /// <summary>Parses the text form of <see cref="ToString"/>.</summary>
    public static RouterSelection Parse(string text)
    {
        var t = text.Trim().ToLowerInvariant();
        if (t == "dense") return Dense;
        var parts = t.Split(':', 2);
        var inv = System.Globalization.CultureInfo.InvariantCulture;
        if (parts.Length == 2 && parts[0] is "top-k" or "topk" && int.TryParse(parts[1], inv, out int k)) return TopKOf(k);
        if (parts.Length == 2 && parts[0] is "top-p" or "topp" && double.TryParse(parts[1], inv, out double p)) return TopPOf(p);
        throw new ArgumentException($"routing: '{text}' is not dense, top-k:K or top-p:P");
    }

    /// <summary>Mask [.., N] of kept experts, ranking by <paramref name="ranking"/> (probabilities for top-p).</summary>
    internal Tensor KeepMask(Tensor ranking, Tensor probabilities)
    {
        switch (Mode)
        {
            case RoutingMode.TopK:
            {
                var idx = ranking.topk(K, dim: -1).indexes;
                return torch.zeros_like(ranking, dtype: ScalarType.Bool).scatter(-1, idx, torch.ones_like(idx, dtype: ScalarType.Bool));
            }
            case RoutingMode.TopP:
            {
                var (sorted, order) = probabilities.sort(-1, descending: true);
                // keep an expert while the mass before it is still below p: the smallest set reaching p
                var before = sorted.cumsum(-1) - sorted;
                var keepSorted = before.Below(P);
                return torch.zeros_like(keepSorted).scatter(-1, order, keepSorted);
            }
            default:
                return torch.ones_like(ranking, dtype: ScalarType.Bool);
        }
    }

    /// <summary>WEMoE: raw routing weights with the unselected experts set to 0.</summary>
    public Tensor ApplyToWeights(Tensor weights)
    {
        if (Mode == RoutingMode.Dense) return weights;
        var mask = KeepMask(weights, Mode == RoutingMode.TopP ? torch.softmax(weights, -1) : weights);
        return weights * mask.to(weights.dtype);
    }

    /// <summary>SMILE / softmax routers: kept probabilities renormalised to sum to 1.</summary>
    public Tensor ApplyToProbabilities(Tensor probabilities)
    {
        if (Mode == RoutingMode.Dense) return probabilities;
        var kept = probabilities * KeepMask(probabilities, probabilities).to(probabilities.dtype);
        return kept / kept.sum(-1, keepdim: true);
    }
}
