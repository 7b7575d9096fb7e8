using TorchSharp;
using static TorchSharp.torch;

namespace MergeDsl.Core.Moe.Sparse.Compression;

/// <summary>
/// MC-SMoE's routing-guided grouping of one layer's experts: the K most used experts (usage frequency on
/// calibration text) become the dominant experts, one per group; every other expert joins the group of the
/// dominant expert it is most similar to. Similarity is that of router logits: for experts i and j, the
/// cosine of their logit columns over all calibration tokens, mapped to [0, 1] as (cos + 1) / 2.
/// </summary>
public static class ExpertGrouping
{
    /// <summary>
    /// Usage frequency of each expert: the share of top-<paramref name="topK"/> selections it received over the
    /// tokens of <paramref name="routerLogits"/> [tokens, E] (selections counted as MC-SMoE counts them:
    /// <c>topk(logits, k)</c>; ties go to the lower index). Sums to 1.
    /// </summary>
    /// <exception cref="ArgumentException">No tokens, or k outside 1..E.</exception>
    public static double[] UsageFrequency(Tensor routerLogits, int topK)
    {
        var counts = UsageCounts(routerLogits, topK);
        double total = counts.Sum();
        return counts.Select(c => c / total).ToArray();
    }

    /// <summary>How many times each expert is among a token's top-<paramref name="topK"/> logits.</summary>
    public static long[] UsageCounts(Tensor routerLogits, int topK)
    {
        if (routerLogits.dim() != 2 || routerLogits.shape[0] == 0)
            throw new ArgumentException($"usage needs router logits [tokens, experts] with at least one token, got [{string.Join(", ", routerLogits.shape)}]");
        long e = routerLogits.shape[1];
        if (topK < 1 || topK > e) throw new ArgumentException($"usage: top-k {topK} is outside 1..{e}");
        using var _ = NewDisposeScope();
        var (_, selected) = routerLogits.detach().to_type(ScalarType.Float64).topk(topK, dim: 1, largest: true, sorted: true);
        var counts = torch.bincount(selected.flatten(), minlength: e);
        return counts.data<long>().ToArray();
    }

    /// <summary>
    /// The E × E router-logit similarity: (cos(logits[:, i], logits[:, j]) + 1) / 2 with the cosine's norms
    /// clamped below at 1e-12 (a column of zeros is similar to nothing but itself); the diagonal is 1.
    /// </summary>
    public static double[,] RouterLogitSimilarity(Tensor routerLogits)
    {
        if (routerLogits.dim() != 2 || routerLogits.shape[0] == 0)
            throw new ArgumentException($"similarity needs router logits [tokens, experts] with at least one token, got [{string.Join(", ", routerLogits.shape)}]");
        using var _ = NewDisposeScope();
        var l = routerLogits.detach().to_type(ScalarType.Float64).cpu();
        var norms = l.norm(0, keepdim: true).clamp_min(1e-12);
        var unit = l.div(norms);
        var cos = unit.t().matmul(unit);
        long e = cos.shape[0];
        var flat = cos.contiguous().data<double>().ToArray();
        var m = new double[e, e];
        for (int i = 0; i < e; i++)
            for (int j = 0; j < e; j++) m[i, j] = i == j ? 1.0 : (flat[i * e + j] + 1) / 2;
        return m;
    }

    /// <summary>
    /// Groups E experts into <paramref name="groups"/> groups. Dominant experts: the most used, by decreasing
    /// usage (ties: lower index first); group g is led by the g-th of them. Each other expert joins the group
    /// whose dominant expert it is most similar to (ties: the more used dominant expert).
    /// </summary>
    /// <param name="usage">Usage frequency of each expert (any non-negative scale).</param>
    /// <param name="similarity">E × E similarity; only the rows of non-dominant experts are read.</param>
    /// <param name="groups">K, between 1 and E.</param>
    /// <exception cref="ArgumentException">K outside 1..E, a matrix of another size, or a negative or non-finite usage.</exception>
    public static ExpertGroups Group(IReadOnlyList<double> usage, double[,] similarity, int groups)
    {
        int e = usage.Count;
        if (groups < 1 || groups > e) throw new ArgumentException($"grouping: {groups} groups is outside 1..{e} experts");
        if (similarity.GetLength(0) != e || similarity.GetLength(1) != e)
            throw new ArgumentException($"grouping: similarity is {similarity.GetLength(0)} × {similarity.GetLength(1)}, expected {e} × {e}");
        if (usage.Any(u => !(u >= 0) || double.IsInfinity(u))) throw new ArgumentException("grouping: usage frequencies must be finite and ≥ 0");
        var byUsage = Enumerable.Range(0, e).OrderByDescending(i => usage[i]).ThenBy(i => i).ToArray();
        var dominant = byUsage.Take(groups).ToArray();
        var labels = new int[e];
        for (int g = 0; g < groups; g++) labels[dominant[g]] = g;
        foreach (var i in byUsage.Skip(groups))
        {
            int best = 0;
            for (int g = 1; g < groups; g++)
                if (similarity[i, dominant[g]] > similarity[i, dominant[best]]) best = g;
            labels[i] = best;
        }
        return new ExpertGroups(dominant, labels);
    }
}

/// <summary>A layer's grouping of experts.</summary>
/// <param name="Dominant">The dominant expert of each group, by decreasing usage (group g is led by <c>Dominant[g]</c>).</param>
/// <param name="Labels">The group of each expert (0..K−1).</param>
public sealed record ExpertGroups(IReadOnlyList<int> Dominant, IReadOnlyList<int> Labels)
{
    /// <summary>K.</summary>
    public int Count => Dominant.Count;

    /// <summary>The members of group g: its dominant expert first, then the others by index.</summary>
    public IReadOnlyList<int> Members(int g)
        => new[] { Dominant[g] }.Concat(Enumerable.Range(0, Labels.Count).Where(i => Labels[i] == g && i != Dominant[g])).ToArray();
}
