using MergeDsl.Core.Checkpoints;
using MergeDsl.Core.Compilation;
using MergeDsl.Core.Ir;
using MergeDsl.Core.Ops;
using TorchSharp;
using static TorchSharp.torch;

namespace MergeDsl.Core.Execution;

/// <summary>
/// Evaluates tensor DAGs. Each node value is computed once and disposed right after its last use.
/// One instance per pass: it carries the global top-k tie quotas, consumed in plan order.
/// </summary>
internal sealed class GraphEvaluator(MergeOptions options, IReadOnlyDictionary<(int Group, int Position), GlobalThreshold> thresholds)
{
    readonly Dictionary<(int, int), long> tiesLeft = thresholds.ToDictionary(kv => kv.Key, kv => kv.Value.TieQuota);

    /// <summary>
    /// Computes <paramref name="targets"/> of <paramref name="plan"/> from the loaded inputs (load node id →
    /// tensor; ownership passes to the evaluator). Returns the targets' values (tensors or tensor arrays), owned by the caller.
    /// </summary>
    public object[] Evaluate(TensorPlan plan, Dictionary<int, Tensor> loads, IReadOnlyList<int> targets)
    {
        var nodes = plan.Nodes;
        var needed = new bool[nodes.Count];
        var uses = new int[nodes.Count];
        var st = new Stack<int>(targets);
        while (st.Count > 0)
        {
            int id = st.Pop();
            if (needed[id]) continue;
            needed[id] = true;
            foreach (int i in nodes[id].Inputs) st.Push(i);
        }
        foreach (var n in nodes)
            if (needed[n.Id])
                foreach (int i in n.Inputs) uses[i]++;
        foreach (int t in targets) uses[t]++;

        var values = new object?[nodes.Count];
        // A value may be overwritten in place by its last consumer when it is a fresh result that no
        // other value shares storage with (loads may be read-only file mappings; casts, packs and picks alias).
        var reusable = new bool[nodes.Count];
        foreach (int t in targets) uses[t] += nodes.Count; // targets are never reused
        try
        {
            foreach (var n in nodes)
            {
                if (!needed[n.Id]) continue;
                if (n.Op == OpKind.Load)
                    values[n.Id] = loads.Remove(n.Id, out var l) ? l : throw new InvalidOperationException($"{plan.Name}: input of node %{n.Id} was not loaded");
                else if (TryInPlace(n, values, uses, reusable) is { } inPlace)
                    values[n.Id] = inPlace;
                else
                    values[n.Id] = Compute(plan, n, values);
                reusable[n.Id] = n.Op is not (OpKind.Load or OpKind.Cast or OpKind.Pack or OpKind.Pick) && values[n.Id] is Tensor;
                if (n.Op is OpKind.Pack or OpKind.Pick or OpKind.Cast)
                    foreach (int i in n.Inputs) reusable[i] = false;
                foreach (int i in n.Inputs)
                    if (--uses[i] == 0) { Release(values[i]); values[i] = null; }
            }
            var result = new object[targets.Count];
            for (int k = 0; k < targets.Count; k++)
            {
                var v = values[targets[k]]!;
                // A node listed twice as a target gets its own handle each time.
                result[k] = k > 0 && targets.Take(k).Contains(targets[k]) ? Alias(v) : v;
            }
            return result;
        }
        catch
        {
            foreach (var v in values) Release(v);
            throw;
        }
        finally
        {
            foreach (var l in loads.Values) l.Dispose();
            loads.Clear();
        }
    }

    /// <summary>
    /// Add, Sub and Scale write into an input that this node is the last user of (saves an allocation
    /// and its page faults per node). Returns null when no input qualifies. Results are bit-identical:
    /// the same operation in the same dtype, only the destination differs.
    /// </summary>
    static Tensor? TryInPlace(PlanNode n, object?[] values, int[] uses, bool[] reusable)
    {
        bool Own(int k) => reusable[n.Inputs[k]] && uses[n.Inputs[k]] == 1 && values[n.Inputs[k]] is Tensor;
        Tensor Take(int k)
        {
            var t = (Tensor)values[n.Inputs[k]]!;
            values[n.Inputs[k]] = null; // ownership moves to this node; the release loop skips it
            return t;
        }
        switch (n.Op)
        {
            case OpKind.Scale when Own(0):
                return Take(0).mul_(n.Scalar);
            case OpKind.Add when n.Inputs[0] != n.Inputs[1]:
                {
                    var a = (Tensor)values[n.Inputs[0]]!;
                    var b = (Tensor)values[n.Inputs[1]]!;
                    if (a.dtype != b.dtype) return null;
                    if (Own(0)) return Take(0).add_(b);
                    if (Own(1)) return Take(1).add_(a);
                    return null;
                }
            case OpKind.Sub when n.Inputs[0] != n.Inputs[1] && Own(0):
                {
                    var b = (Tensor)values[n.Inputs[1]]!;
                    var a = (Tensor)values[n.Inputs[0]]!;
                    return a.dtype == b.dtype ? Take(0).sub_(b) : null;
                }
            default:
                return null;
        }
    }

    static object Alias(object v) => v is Tensor t ? t.alias() : ((Tensor[])v).Select(x => x.alias()).ToArray();

    public static void Release(object? v)
    {
        if (v is Tensor t) t.Dispose();
        else if (v is Tensor[] ts) foreach (var x in ts) x.Dispose();
    }

    ScalarType ComputeType(TensorPlan plan) => options.ComputeDType ?? DTypes.ToTorch(plan.InputDType);

    object Compute(TensorPlan plan, PlanNode n, object?[] values)
    {
        Tensor T(int k) => (Tensor)values[n.Inputs[k]]!;
        Tensor[] S(int k) => (Tensor[])values[n.Inputs[k]]!;
        switch (n.Op)
        {
            case OpKind.Cast:
                {
                    var x = T(0);
                    var type = ComputeType(plan);
                    var dev = options.Device ?? CPU;
                    return x.dtype == type && x.device_type == dev.type && x.device_index == dev.index ? x.alias() : x.to(type, dev);
                }
            case OpKind.Pack: return n.Inputs.Select(i => ((Tensor)values[i]!).alias()).ToArray();
            case OpKind.Pick: return S(0)[n.Index].alias();
            case OpKind.Sub: return MergeOps.Sub(T(0), T(1));
            case OpKind.Add: return MergeOps.Add(T(0), T(1));
            case OpKind.Scale: return MergeOps.Scale(T(0), n.Scalar);
            case OpKind.TopK: return MergeOps.TopK(T(0), n.Sparsifier!.Density);
            case OpKind.GlobalTopK:
                {
                    if (!thresholds.TryGetValue((n.Group, n.Index), out var th))
                        throw new InvalidOperationException($"{plan.Name}: global top-k group {n.Group} has no statistics");
                    var key = (n.Group, n.Index);
                    var (r, used) = MergeOps.ApplyThreshold(T(0), th.Bits, tiesLeft[key]);
                    tiesLeft[key] -= used;
                    return r;
                }
            case OpKind.Dare:
                {
                    var b = (Bernoulli)n.Sparsifier!;
                    using var noise = options.Noise(new NoiseRequest(plan.Name, n.Index, plan.Shape, options.Seed));
                    return MergeOps.Dare(T(0), noise, b.Density, b.Rescale);
                }
            case OpKind.Breadcrumbs:
                {
                    var b = (Breadcrumbs)n.Sparsifier!;
                    return MergeOps.Breadcrumbs(T(0), b.Density, b.Gamma);
                }
            case OpKind.Della:
                {
                    var d = (Della)n.Sparsifier!;
                    using var noise = options.Noise(new NoiseRequest(plan.Name, n.Index, plan.Shape, options.Seed));
                    return MergeOps.Della(T(0), noise, d.Density, d.Epsilon, d.Rescale);
                }
            case OpKind.ElectSign: return MergeOps.ElectSign(S(0), n.Sign);
            case OpKind.Sum: return MergeOps.Sum(S(0));
            case OpKind.Mean: return MergeOps.Mean(S(0));
            case OpKind.DisjointMean: return MergeOps.DisjointMean(S(0));
            case OpKind.Weighted: return MergeOps.Weighted(S(0), n.Weights!);
            case OpKind.Lerp: return MergeOps.Lerp(S(0)[0], S(0)[1], n.Scalar);
            case OpKind.Slerp: return MergeOps.Slerp(S(0)[0], S(0)[1], n.Scalar);
            case OpKind.ModelStock: return MergeOps.ModelStock(S(0), T(1));
            default: throw new InvalidOperationException($"{plan.Name}: cannot evaluate {n.Op}");
        }
    }
}
