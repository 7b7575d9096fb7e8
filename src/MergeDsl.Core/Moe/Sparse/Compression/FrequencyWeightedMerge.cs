using TorchSharp;
using static TorchSharp.torch;
using MergeDsl.Core.Torch;

namespace MergeDsl.Core.Moe.Sparse.Compression;

/// <summary>
/// MC-SMoE's merge of one group: every member is first aligned to the group's dominant expert
/// (<see cref="NeuronAlignment"/>), then the group is averaged with weights proportional to usage
/// frequency: W = Σᵢ fᵢ·Wᵢ / Σᵢ fᵢ, for gate, up and down alike. MC-SMoE divides by Σ fᵢ + 1e-6 (against
/// a group nobody used); here a group of unused experts is averaged uniformly instead, so merging copies of
/// one expert gives that expert exactly.
/// </summary>
public static class FrequencyWeightedMerge
{
    /// <summary>Σᵢ fᵢ·Wᵢ / Σᵢ fᵢ (uniform when Σ fᵢ = 0), accumulated in float64 and returned in the first member's dtype.</summary>
    /// <exception cref="ArgumentException">No members, a count mismatch, negative weights, or members of different shapes.</exception>
    public static ExpertWeights Average(IReadOnlyList<ExpertWeights> members, IReadOnlyList<double> frequencies)
    {
        if (members.Count == 0) throw new ArgumentException("merge: a group needs at least one expert");
        if (frequencies.Count != members.Count) throw new ArgumentException($"merge: {members.Count} experts but {frequencies.Count} frequencies");
        if (frequencies.Any(f => !(f >= 0) || double.IsInfinity(f))) throw new ArgumentException("merge: usage frequencies must be finite and ≥ 0");
        foreach (var m in members.Skip(1)) members[0].CheckSameShape(m, "merge");
        double total = frequencies.Sum();
        var w = total > 0 ? frequencies.Select(f => f / total).ToArray() : frequencies.Select(_ => 1.0 / members.Count).ToArray();
        Tensor Mix(Func<ExpertWeights, Tensor> part)
        {
            using var scope = NewDisposeScope();
            var first = part(members[0]);
            var acc = torch.zeros(first.shape, ScalarType.Float64);
            for (int i = 0; i < members.Count; i++)
                if (w[i] != 0) acc.add_(part(members[i]).detach().to_type(ScalarType.Float64).cpu().Times(w[i]));
            return acc.to_type(first.dtype).MoveToOuterDisposeScope();
        }
        return new ExpertWeights(Mix(e => e.Gate), Mix(e => e.Up), Mix(e => e.Down));
    }

    /// <summary>
    /// Aligns every member to <c>members[0]</c> (the dominant expert), then averages by usage. Returns the
    /// merged expert and whether every alignment was exact (see <see cref="LinearAssignment"/>).
    /// </summary>
    public static (ExpertWeights Merged, bool ExactAlignment) AlignAndMerge(IReadOnlyList<ExpertWeights> members, IReadOnlyList<double> frequencies,
        bool align = true, int exactLimit = LinearAssignment.ExactLimit)
    {
        if (members.Count == 0) throw new ArgumentException("merge: a group needs at least one expert");
        bool exact = true;
        var aligned = new List<ExpertWeights> { members[0] };
        using var scope = NewDisposeScope();
        foreach (var m in members.Skip(1))
        {
            if (!align) { aligned.Add(m); continue; }
            var a = NeuronAlignment.Match(members[0], m, exactLimit);
            exact &= a.Exact;
            aligned.Add(NeuronAlignment.Permute(m, a.Columns));
        }
        var merged = Average(aligned, frequencies);
        return (new ExpertWeights(merged.Gate.MoveToOuterDisposeScope(), merged.Up.MoveToOuterDisposeScope(), merged.Down.MoveToOuterDisposeScope()), exact);
    }
}
