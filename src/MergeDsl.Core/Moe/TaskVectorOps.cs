using TorchSharp;
using static TorchSharp.torch;
using MergeDsl.Core.Ops;

namespace MergeDsl.Core.Moe;

/// <summary>
/// Task arithmetic over in-memory tensors, for the parameters upscaling does not upscale when no rest
/// recipe is given. Built from the merge algebra's own ops, so it means exactly what the recipe
/// library's <c>taskArithmetic</c> means.
/// </summary>
public static class TaskVectorOps
{
    /// <summary>θ₀ + λ·Σᵢ(θᵢ − θ₀), computed in float32 (the sum accumulated in float64, as <see cref="MergeOps.Sum"/> does).</summary>
    public static Tensor TaskArithmetic(Tensor baseTensor, IReadOnlyList<Tensor> experts, double lambda)
    {
        using var scope = NewDisposeScope();
        var b = baseTensor.to(ScalarType.Float32);
        var taus = experts.Select(e => MergeOps.Sub(e.to(ScalarType.Float32), b)).ToList();
        return MergeOps.Add(b, MergeOps.Scale(MergeOps.Sum(taus), lambda)).MoveToOuterDisposeScope();
    }
}
