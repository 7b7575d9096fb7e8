using MergeDsl.Core.Checkpoints;
using MergeDsl.Core.Compilation;
using MergeDsl.Core.Ops;
using TorchSharp;
using static TorchSharp.torch;
using MergeDsl.Core.Torch;

namespace MergeDsl.Core.Execution;

/// <summary>
/// The statistics phase of global top-k: for every group and stack position, the exact magnitude
/// threshold that keeps k = round(density·n) entries over all member tensors. Memory stays bounded
/// (one tensor at a time plus two histograms): pass 1 counts the top 16 bits of every |x| (as
/// float32 bits, 32768 bins), which locates the bin holding the k-th largest; pass 2 counts the low
/// 16 bits of the entries in that bin, which pins the exact bit pattern and how many equal entries
/// must be kept (the tie quota, given to the first ties in plan order).
/// </summary>
internal static class GlobalStatistics
{
    const int CoarseBins = 1 << 15;
    const int FineBins = 1 << 16;

    public static Dictionary<(int Group, int Position), GlobalThreshold> Compute(MergePlan plan, MergeOptions options)
    {
        var result = new Dictionary<(int, int), GlobalThreshold>();
        foreach (var g in Order(plan.Groups))
        {
            var members = g.Members.GroupBy(m => m.Tensor).OrderBy(x => x.Key).ToList();
            var coarse = g.Positions.ToDictionary(p => p, _ => new long[CoarseBins]);
            var totals = g.Positions.ToDictionary(p => p, _ => 0L);
            int done = 0;
            long bytesTotal = 2 * members.Sum(m => plan.Tensors[m.Key].InputBytes), bytesDone = 0;

            // Pass 1: coarse histogram.
            var ev = new GraphEvaluator(options, result);
            foreach (var m in members)
            {
                var t = plan.Tensors[m.Key];
                var nodes = m.Select(x => t.Nodes[x.Node]).ToList();
                var values = EvaluateInputs(ev, plan, t, nodes, options);
                try
                {
                    for (int i = 0; i < nodes.Count; i++)
                    {
                        using var scope = NewDisposeScope();
                        var keys = MergeOps.MagnitudeBits((Tensor)values[i]);
                        var counts = keys.Over(FineBins, RoundingMode.trunc).bincount(null, CoarseBins).cpu().data<long>().ToArray();
                        var acc = coarse[nodes[i].Index];
                        for (int b = 0; b < CoarseBins; b++) acc[b] += counts[b];
                        totals[nodes[i].Index] += keys.numel();
                    }
                }
                finally { foreach (var v in values) GraphEvaluator.Release(v); }
                bytesDone += t.InputBytes;
                options.Progress?.Invoke(new MergeProgress("statistics", ++done, 2 * members.Count, bytesDone, bytesTotal));
            }

            var bin = new Dictionary<int, (int Bin, long Above, long K)>();
            foreach (int p in g.Positions)
            {
                long k = MergeOps.KeepCount(g.Density, totals[p]);
                long above = 0;
                int found = -1;
                if (k > 0)
                    for (int b = CoarseBins - 1; b >= 0; b--)
                    {
                        if (above + coarse[p][b] >= k) { found = b; break; }
                        above += coarse[p][b];
                    }
                bin[p] = (found, above, k);
            }

            // Pass 2: fine histogram inside the located bin.
            var fine = g.Positions.ToDictionary(p => p, _ => new long[FineBins]);
            ev = new GraphEvaluator(options, result);
            foreach (var m in members)
            {
                var t = plan.Tensors[m.Key];
                var nodes = m.Select(x => t.Nodes[x.Node]).ToList();
                var values = EvaluateInputs(ev, plan, t, nodes, options);
                try
                {
                    for (int i = 0; i < nodes.Count; i++)
                    {
                        var (b, _, _) = bin[nodes[i].Index];
                        if (b < 0) continue;
                        using var scope = NewDisposeScope();
                        var keys = MergeOps.MagnitudeBits((Tensor)values[i]);
                        var inBin = keys.masked_select(keys.Over(FineBins, RoundingMode.trunc).EqualTo(b));
                        if (inBin.numel() == 0) continue;
                        var counts = inBin.Mod(FineBins).bincount(null, FineBins).cpu().data<long>().ToArray();
                        var acc = fine[nodes[i].Index];
                        for (int j = 0; j < FineBins; j++) acc[j] += counts[j];
                    }
                }
                finally { foreach (var v in values) GraphEvaluator.Release(v); }
                bytesDone += t.InputBytes;
                options.Progress?.Invoke(new MergeProgress("statistics", ++done, 2 * members.Count, bytesDone, bytesTotal));
            }

            foreach (int p in g.Positions)
            {
                var (b, above, k) = bin[p];
                if (k == 0) { result[(g.Id, p)] = new GlobalThreshold(long.MaxValue, 0, 0, totals[p]); continue; }
                long gt = above;
                for (int j = FineBins - 1; j >= 0; j--)
                {
                    long c = fine[p][j];
                    if (gt + c >= k)
                    {
                        result[(g.Id, p)] = new GlobalThreshold(((long)b << 16) | (long)j, k - gt, k, totals[p]) { Equal = c };
                        break;
                    }
                    gt += c;
                }
            }
        }
        return result;
    }

    /// <summary>
    /// For every member tensor of every group: the tie quota left when a run in plan order reaches it, so that a part
    /// (or a resumed run) evaluating only some tensors keeps exactly the ties a whole run keeps. Only a quota strictly
    /// between 0 and the number of equal entries depends on the order; for those, member tensors are read once more, in
    /// plan order, until the quota is used up.
    /// </summary>
    public static Dictionary<string, IReadOnlyDictionary<(int Group, int Position), long>> TieStarts(
        MergePlan plan, MergeOptions options, IReadOnlyDictionary<(int Group, int Position), GlobalThreshold> thresholds, out long bytesRead)
    {
        var starts = new Dictionary<string, Dictionary<(int, int), long>>(StringComparer.Ordinal);
        var view = new Dictionary<string, IReadOnlyDictionary<(int Group, int Position), long>>(StringComparer.Ordinal);
        bytesRead = 0;
        foreach (var g in Order(plan.Groups))
        {
            var remaining = g.Positions.ToDictionary(p => p, p => thresholds[(g.Id, p)].TieQuota);
            var partial = g.Positions.Where(p => thresholds[(g.Id, p)] is var th && th.TieQuota > 0 && th.TieQuota < th.Equal).ToHashSet();
            var ev = new GraphEvaluator(options, thresholds, tieStarts: view);
            foreach (var m in g.Members.GroupBy(m => m.Tensor).OrderBy(x => x.Key))
            {
                var t = plan.Tensors[m.Key];
                if (!starts.TryGetValue(t.Name, out var own)) view[t.Name] = starts[t.Name] = own = new();
                foreach (int p in g.Positions) own[(g.Id, p)] = remaining[p];
                var nodes = m.Select(x => t.Nodes[x.Node]).Where(n => partial.Contains(n.Index) && remaining[n.Index] > 0).ToList();
                if (nodes.Count == 0) continue;
                var values = EvaluateInputs(ev, plan, t, nodes, options);
                bytesRead += t.InputBytes;
                try
                {
                    for (int i = 0; i < nodes.Count; i++)
                    {
                        using var scope = NewDisposeScope();
                        using var bits = thresholds[(g.Id, nodes[i].Index)].Bits.ToScalar();
                        long equal = MergeOps.MagnitudeBits((Tensor)values[i]).eq(bits).sum().item<long>();
                        remaining[nodes[i].Index] -= Math.Min(remaining[nodes[i].Index], equal);
                    }
                }
                finally { foreach (var v in values) GraphEvaluator.Release(v); }
            }
        }
        return view;
    }

    static List<object> EvaluateInputs(GraphEvaluator ev, MergePlan plan, TensorPlan t, List<PlanNode> nodes, MergeOptions options)
    {
        var targets = nodes.Select(n => n.Inputs[0]).ToList();
        var loads = LoadInputs(plan, t, targets, options);
        return ev.Evaluate(t, loads, targets).ToList();
    }

    /// <summary>Loads the inputs that <paramref name="targets"/> depend on, each checked for NaN/Inf unless allowed: the one place every pass reads inputs.</summary>
    internal static Dictionary<int, Tensor> LoadInputs(MergePlan plan, TensorPlan t, IEnumerable<int> targets, MergeOptions options)
    {
        var needed = new HashSet<int>();
        var st = new Stack<int>(targets);
        while (st.Count > 0)
        {
            int id = st.Pop();
            if (!needed.Add(id)) continue;
            foreach (int i in t.Nodes[id].Inputs) st.Push(i);
        }
        var loads = new Dictionary<int, Tensor>();
        try
        {
            foreach (var n in t.Nodes.Where(n => n.Op == OpKind.Load && needed.Contains(n.Id)))
            {
                var model = plan.Models[n.Model];
                string name = n.Source ?? t.Name;
                loads[n.Id] = Executor.LoadOnDevice(model.Source, name, options);
                if (!options.AllowNonFinite) FiniteCheck.Input(loads[n.Id], name, model.Label);
            }
        }
        catch
        {
            foreach (var l in loads.Values) l.Dispose();
            throw;
        }
        return loads;
    }

    static IEnumerable<GlobalGroup> Order(IReadOnlyList<GlobalGroup> groups)
    {
        var done = new HashSet<int>();
        var order = new List<GlobalGroup>();
        while (order.Count < groups.Count)
        {
            var next = groups.FirstOrDefault(g => !done.Contains(g.Id) && g.DependsOn.All(done.Contains))
                ?? throw new InvalidOperationException("global top-k groups depend on each other in a cycle");
            done.Add(next.Id);
            order.Add(next);
        }
        return order;
    }
}
