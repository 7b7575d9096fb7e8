using TorchSharp;
using static TorchSharp.torch;
using MergeDsl.Core.Torch;

namespace MergeDsl.Core.Moe;

/// <summary>
/// The tensor arithmetic upscaling needs for the parameters it does not upscale (task arithmetic) and
/// for E-WEMoE's pruning. Same semantics as the recipe library's <c>taskArithmetic</c> and
/// <c>sparsify (topK density)</c> with per-tensor scope.
/// </summary>
public static class TaskVectorOps
{
    /// <summary>θ₀ + λ·Σᵢ(θᵢ − θ₀), computed in float32.</summary>
    public static Tensor TaskArithmetic(Tensor baseTensor, IReadOnlyList<Tensor> experts, double lambda)
    {
        using var scope = NewDisposeScope();
        var b = baseTensor.to(ScalarType.Float32);
        var sum = torch.zeros_like(b);
        foreach (var e in experts) sum = sum.Plus(e.to(ScalarType.Float32) - b);
        return b.Plus(sum.Times(lambda)).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Keeps the k = round(fraction·n) entries of largest |x| (ties: torch.topk order), zeroes the rest;
    /// fraction 1 returns a copy.
    /// </summary>
    public static Tensor TopKMagnitude(Tensor t, double fraction)
    {
        if (fraction >= 1.0) return t.clone();
        using var scope = NewDisposeScope();
        long n = t.numel();
        long k = (long)Math.Round(fraction * n, MidpointRounding.AwayFromZero);
        var flat = t.flatten();
        var mask = torch.zeros(n, dtype: ScalarType.Bool);
        if (k > 0)
        {
            var idx = flat.abs().topk((int)k).indexes;
            mask = mask.index_fill(0, idx, true);
        }
        return (flat * mask.to(flat.dtype)).view(t.shape).MoveToOuterDisposeScope();
    }
}
