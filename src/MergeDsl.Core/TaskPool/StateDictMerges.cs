using TorchSharp;
using static TorchSharp.torch;

namespace MergeDsl.Core.TaskPool;

/// <summary>
/// Static merges over in-memory parameter maps, used by the task-pool benchmark. This is a small bridge
/// (FusionBench semantics, documented per method) until the benchmark runs the merge algebra's compiled
/// recipes; every parameter of the pretrained map is produced.
/// </summary>
public static class StateDictMerges
{
    /// <summary>τᵢ = θᵢ − θ₀ for every parameter.</summary>
    public static List<Dictionary<string, Tensor>> TaskVectors(IReadOnlyDictionary<string, Tensor> pre, IReadOnlyList<Dictionary<string, Tensor>> experts) =>
        experts.Select(e => pre.ToDictionary(kv => kv.Key, kv => e[kv.Key] - kv.Value)).ToList();

    /// <summary>θ₀ + Σᵢ λᵢ τᵢ.</summary>
    public static Dictionary<string, Tensor> Add(IReadOnlyDictionary<string, Tensor> pre, IReadOnlyList<Dictionary<string, Tensor>> taus, IReadOnlyList<double> lambdas)
    {
        var r = new Dictionary<string, Tensor>();
        foreach (var (name, p0) in pre)
        {
            var acc = p0.clone();
            for (int i = 0; i < taus.Count; i++) acc.add_(taus[i][name], alpha: lambdas[i]);
            r[name] = acc;
        }
        return r;
    }

    /// <summary>Simple average of the experts: TA with λ = 1/N.</summary>
    public static Dictionary<string, Tensor> Average(IReadOnlyDictionary<string, Tensor> pre, IReadOnlyList<Dictionary<string, Tensor>> taus) =>
        Add(pre, taus, Enumerable.Repeat(1.0 / taus.Count, taus.Count).ToList());

    /// <summary>Task arithmetic: θ₀ + λ Σᵢ τᵢ.</summary>
    public static Dictionary<string, Tensor> TaskArithmetic(IReadOnlyDictionary<string, Tensor> pre, IReadOnlyList<Dictionary<string, Tensor>> taus, double lambda) =>
        Add(pre, taus, Enumerable.Repeat(lambda, taus.Count).ToList());

    /// <summary>
    /// TIES: per task vector keep the top <paramref name="density"/> fraction by magnitude over the whole model
    /// (global, as in the TIES paper and FusionBench's threshold), elect each entry's sign by the sign of the
    /// summed trimmed values, keep agreeing entries and combine them by <c>sum</c> (FusionBench) or by
    /// their disjoint mean; θ₀ + λ · merged.
    /// </summary>
    public static Dictionary<string, Tensor> Ties(IReadOnlyDictionary<string, Tensor> pre, IReadOnlyList<Dictionary<string, Tensor>> taus,
        double density, double lambda, bool disjointMean = false)
    {
        var trimmed = taus.Select(t => TopKGlobal(t, density)).ToList();
        return ElectAndMerge(pre, trimmed, lambda, disjointMean);
    }

    /// <summary>
    /// DARE-TIES: each task-vector entry survives with probability <paramref name="density"/> and is rescaled by
    /// 1/density (DARE), seeded per parameter name and task so results do not depend on order; then TIES' sign
    /// election and merge.
    /// </summary>
    public static Dictionary<string, Tensor> DareTies(IReadOnlyDictionary<string, Tensor> pre, IReadOnlyList<Dictionary<string, Tensor>> taus,
        double density, double lambda, int seed, bool disjointMean = false)
    {
        var dropped = taus.Select((t, i) => t.ToDictionary(kv => kv.Key, kv =>
        {
            var gen = new Generator((ulong)StableSeed(seed, i, kv.Key));
            var keep = rand(kv.Value.shape, generator: gen).lt(density);
            return kv.Value * keep / density;
        })).ToList();
        return ElectAndMerge(pre, dropped, lambda, disjointMean);
    }

    static long StableSeed(int seed, int task, string name)
    {
        unchecked
        {
            long h = 1469598103934665603L ^ seed ^ ((long)task << 32);
            foreach (var ch in name) h = (h ^ ch) * 1099511628211L;
            return h & 0x7fffffffffffffffL;
        }
    }

    static Dictionary<string, Tensor> ElectAndMerge(IReadOnlyDictionary<string, Tensor> pre, IReadOnlyList<Dictionary<string, Tensor>> taus, double lambda, bool disjointMean)
    {
        var r = new Dictionary<string, Tensor>();
        foreach (var (name, p0) in pre)
        {
            var st = torch.stack(taus.Select(t => t[name]).ToArray());           // [N, ...]
            var sign = st.sum(0L, false).sign();
            var agree = st.sign().eq(sign.unsqueeze(0)).logical_and(st.ne(0));
            var kept = st * agree;
            var merged = kept.sum(0L, false);
            if (disjointMean) merged = merged / agree.sum(0L, false).clamp_min(1);
            r[name] = p0 + lambda * merged;
        }
        return r;
    }

    /// <summary>Keeps the k = round(density · n) largest-magnitude entries over all tensors of one task vector.</summary>
    public static Dictionary<string, Tensor> TopKGlobal(IReadOnlyDictionary<string, Tensor> tau, double density)
    {
        if (density >= 1.0) return tau.ToDictionary(kv => kv.Key, kv => kv.Value.clone());
        var all = cat(tau.Values.Select(t => t.abs().flatten()).ToArray());
        long k = (long)Math.Round(density * all.numel());
        if (k <= 0) return tau.ToDictionary(kv => kv.Key, kv => zeros_like(kv.Value));
        var threshold = all.topk((int)k).values[-1];
        return tau.ToDictionary(kv => kv.Key, kv => kv.Value * kv.Value.abs().ge(threshold));
    }

    /// <summary>Keeps the top <paramref name="density"/> fraction by magnitude within each tensor.</summary>
    public static Tensor TopKPerTensor(Tensor t, double density)
    {
        if (density >= 1.0) return t.clone();
        long k = (long)Math.Round(density * t.numel());
        if (k <= 0) return zeros_like(t);
        var threshold = t.abs().flatten().topk((int)k).values[-1];
        return t * t.abs().ge(threshold);
    }
}
