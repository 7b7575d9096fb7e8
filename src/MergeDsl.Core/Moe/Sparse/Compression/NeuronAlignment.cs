using TorchSharp;
using static TorchSharp.torch;

namespace MergeDsl.Core.Moe.Sparse.Compression;

/// <summary>
/// Permutation alignment of one expert's intermediate neurons to a reference expert (MC-SMoE's weight
/// matching, after Git Re-Basin): permuting neurons (rows of gate and up, columns of down by the same π)
/// leaves the expert's function unchanged, so before averaging two experts their neurons are put in the
/// order that maximises Σᵢ ⟨ref neuron i, target neuron π(i)⟩, where a neuron's vector is its gate row,
/// its up row and its down column together (MC-SMoE's <c>include_wo</c>). Solved by <see cref="LinearAssignment"/>.
/// </summary>
public static class NeuronAlignment
{
    /// <summary>
    /// S[i, j] = ⟨gateᵣ[i], gateₜ[j]⟩ + ⟨upᵣ[i], upₜ[j]⟩ + ⟨downᵣ[:, i], downₜ[:, j]⟩, computed in float64.
    /// </summary>
    public static double[,] Similarity(ExpertWeights reference, ExpertWeights target)
    {
        reference.CheckSameShape(target, "neuron alignment");
        using var _ = NewDisposeScope();
        static Tensor F(Tensor t) => t.detach().to_type(ScalarType.Float64).cpu();
        var s = F(reference.Gate).matmul(F(target.Gate).t())
            .add_(F(reference.Up).matmul(F(target.Up).t()))
            .add_(F(reference.Down).t().matmul(F(target.Down)));
        long n = s.shape[0];
        var flat = s.contiguous().data<double>().ToArray();
        var m = new double[n, n];
        Buffer.BlockCopy(flat, 0, m, 0, flat.Length * sizeof(double));
        return m;
    }

    /// <summary>
    /// The neuron order of <paramref name="target"/> that best matches <paramref name="reference"/>:
    /// neuron i of the aligned target is the target's neuron <c>Columns[i]</c>.
    /// </summary>
    public static Assignment Match(ExpertWeights reference, ExpertWeights target, int exactLimit = LinearAssignment.ExactLimit)
        => LinearAssignment.Solve(Similarity(reference, target), exactLimit);

    /// <summary>The same expert with its neurons reordered: new neuron i is old neuron <c>order[i]</c> (new tensors).</summary>
    /// <exception cref="ArgumentException">The order is not a permutation of the expert's neurons.</exception>
    public static ExpertWeights Permute(ExpertWeights expert, IReadOnlyList<int> order)
    {
        expert.CheckShapes("neuron permutation");
        if (order.Count != expert.Intermediate || order.Distinct().Count() != order.Count || order.Any(i => i < 0 || i >= order.Count))
            throw new ArgumentException($"neuron permutation: the order is not a permutation of {expert.Intermediate} neurons");
        using var index = torch.tensor(order.Select(i => (long)i).ToArray());
        return new ExpertWeights(expert.Gate.index_select(0, index), expert.Up.index_select(0, index), expert.Down.index_select(1, index));
    }

    /// <summary><paramref name="target"/> with its neurons in the order that matches <paramref name="reference"/>.</summary>
    public static ExpertWeights Align(ExpertWeights reference, ExpertWeights target, int exactLimit = LinearAssignment.ExactLimit)
        => Permute(target, Match(reference, target, exactLimit).Columns);
}
