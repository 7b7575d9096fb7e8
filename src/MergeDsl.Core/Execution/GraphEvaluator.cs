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
/// With <paramref name="tieStarts"/> (tensor name → the quota left when a run in plan order reaches it), any subset of
/// the tensors can be evaluated, in any order, with the ties of a whole run.
internal sealed class GraphEvaluator(MergeOptions options, IReadOnlyDictionary<(int Group, int Position), GlobalThreshold> thresholds, TensorPool? pool = null,
    IReadOnlyDictionary<string, IReadOnlyDictionary<(int Group, int Position), long>>? tieStarts = null)
{
    readonly Dictionary<(int, int), long> tiesLeft = thresholds.ToDictionary(kv => kv.Key, kv => kv.Value.TieQuota);

    /// <summary>
    /// Computes <paramref name="targets"/> of <paramref name="plan"/> from the loaded inputs (load node id →
    /// tensor; ownership passes to the evaluator). Returns the targets' values (tensors or tensor arrays), owned by the caller.
    /// </summary>
    public object[] Evaluate(TensorPlan plan, Dictionary<int, Tensor> loads, IReadOnlyList<int> targets)
    {
        if (tieStarts is not null && tieStarts.TryGetValue(plan.Name, out var starts))
            foreach (var (key, quota) in starts) tiesLeft[key] = quota;
        var preset = new Dictionary<int, object>();
        foreach (var (id, t) in loads) preset[id] = t;
        loads.Clear();
        if (targets.Count == 1 && ChunkedPart(plan, targets[0]) is { } chunked)
            return [EvaluateChunked(plan, preset, targets[0], chunked)];
        return EvaluateCore(plan, preset, targets);
    }

    /// <summary>
    /// Elements per block of a chunked evaluation: 128 KiB of float32, below ATen's grain size (32768)
    /// so that each op runs on the calling thread. Larger blocks get split across OpenMP threads, and
    /// with the reader and writer threads on the same cores the workers' spin-waits cost more CPU
    /// than the merge itself (measured on a busy 2-core machine, TA over 1 GB of input: 11 s user CPU with
    /// 256 K blocks, 7.7 s with 64 K, 2.1 s with 32 K).
    /// </summary>
    const long DefaultChunkElements = 1L << 15;

    /// <summary>A different block size for the calling thread (tests: tiny blocks exercise chunking on tiny tensors; ≤ 0 disables it).</summary>
    [ThreadStatic] internal static long? ChunkElementsOverride;

    static long ChunkElements => ChunkElementsOverride ?? DefaultChunkElements;

    /// <summary>Whole-tensor results at least this large come from the output pool.</summary>
    const long PooledElements = 1L << 20;

    /// <summary>Ops whose every output element depends only on the same element of each input (and on no noise or statistic).</summary>
    static bool Elementwise(OpKind op) => op is OpKind.Cast or OpKind.Pack or OpKind.Pick or OpKind.Sub or OpKind.Add
        or OpKind.Scale or OpKind.Sum or OpKind.Mean or OpKind.DisjointMean or OpKind.DisjointWeightedMean or OpKind.Weighted or OpKind.Lerp or OpKind.ElectSign;

    /// <summary>
    /// The needed nodes that can be evaluated block by block: elementwise nodes none of whose
    /// descendants (towards the target) needs the whole tensor. Null when chunking does not apply:
    /// small tensors, non-CPU devices, or a target outside that set.
    /// </summary>
    bool[]? ChunkedPart(TensorPlan plan, int target)
    {
        if (options.Device is { } d && d.type != DeviceType.CPU) return null;
        if (ChunkElements <= 0 || plan.ElementCount < 2 * ChunkElements) return null;
        var nodes = plan.Nodes;
        if (!Elementwise(nodes[target].Op) || nodes[target].Kind != ValueKind.Tensor) return null;
        var needed = new bool[nodes.Count];
        var st = new Stack<int>([target]);
        while (st.Count > 0)
        {
            int id = st.Pop();
            if (needed[id]) continue;
            needed[id] = true;
            foreach (int i in nodes[id].Inputs) st.Push(i);
        }
        // whole[i]: node i must be computed on the whole tensor (a load, a non-elementwise op, or an input of one).
        var whole = new bool[nodes.Count];
        for (int id = nodes.Count - 1; id >= 0; id--)
        {
            if (!needed[id]) continue;
            if (nodes[id].Op == OpKind.Load || !Elementwise(nodes[id].Op)) whole[id] = true;
            if (whole[id]) foreach (int i in nodes[id].Inputs) whole[i] = true;
        }
        if (whole[target]) return null;
        var chunked = new bool[nodes.Count];
        for (int id = 0; id < nodes.Count; id++) chunked[id] = needed[id] && !whole[id];
        return chunked;
    }

    /// <summary>
    /// Evaluates the whole-tensor part first, then the elementwise rest block by block over flat
    /// ranges, each block's result copied into one output tensor. Per element the same operations run
    /// in the same dtypes as in <see cref="EvaluateCore"/>, so results are bit-identical; what changes is
    /// that intermediates are cache-sized and their buffers are reused (no page faults, no memory traffic
    /// for full-size temporaries).
    /// </summary>
    Tensor EvaluateChunked(TensorPlan plan, Dictionary<int, object> preset, int target, bool[] chunked)
    {
        var nodes = plan.Nodes;
        var boundary = new List<int>();
        foreach (var n in nodes)
            if (chunked[n.Id])
                foreach (int i in n.Inputs)
                    if (!chunked[i] && !boundary.Contains(i)) boundary.Add(i);
        var unshared = new bool[boundary.Count];
        var whole = EvaluateCore(plan, preset, boundary, unshared);
        var flat = new Dictionary<int, object>();
        Tensor? output = null;
        try
        {
            long n = plan.ElementCount;
            for (int k = 0; k < boundary.Count; k++)
            {
                var v = whole[k];
                flat[boundary[k]] = v is Tensor t ? Flat(t, n) : ((Tensor[])v).Select(x => Flat(x, n)).ToArray();
            }
            Tensor? outFlat = null;
            for (long start = 0; start < n; start += ChunkElements)
            {
                long len = Math.Min(ChunkElements, n - start);
                var block = new Dictionary<int, object>();
                foreach (var (id, v) in flat)
                    block[id] = v is Tensor t ? t.narrow(0, start, len) : ((Tensor[])v).Select(x => x.narrow(0, start, len)).ToArray();
                using var r = (Tensor)EvaluateCore(plan, block, [target])[0];
                if (output is null)
                {
                    output = pool is not null && r.device_type == DeviceType.CPU ? pool.Rent(plan.Shape, r.dtype) : empty(plan.Shape, r.dtype, r.device);
                    outFlat = output.view(-1);
                }
                // r is a flat block (every preset value is); any undisposed handle here would keep a
                // block's storage alive until the GC finalises it.
                using var dst = outFlat!.narrow(0, start, len);
                dst.copy_(r);
            }
            outFlat?.Dispose();
            return output!;
        }
        catch
        {
            if (output is not null)
            {
                if (pool is not null) pool.Return(output);
                else output.Dispose();
            }
            throw;
        }
        finally
        {
            foreach (var v in flat.Values) Release(v);
            // With their block views gone, whole-phase results that no other value aliases can be reused.
            for (int k = 0; k < whole.Length; k++) Free(whole[k], unshared[k]);
        }
    }

    static Tensor Flat(Tensor t, long n) =>
        t.numel() == n && t.is_contiguous() ? t.view(-1)
        : throw new InvalidOperationException($"chunked evaluation needs contiguous inputs of {n} elements, got {string.Join("x", t.shape)}");

    /// <summary>
    /// Computes <paramref name="targets"/> from preset node values (loads, or blocks of them; ownership
    /// passes to the evaluator). Nodes with a preset value are not computed and never overwritten in place.
    /// </summary>
    object[] EvaluateCore(TensorPlan plan, Dictionary<int, object> loads, IReadOnlyList<int> targets, bool[]? targetUnshared = null)
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
            if (loads.ContainsKey(id)) continue;
            foreach (int i in nodes[id].Inputs) st.Push(i);
        }
        foreach (var n in nodes)
            if (needed[n.Id] && !loads.ContainsKey(n.Id))
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
                if (loads.Remove(n.Id, out var l))
                {
                    values[n.Id] = l;
                    continue;
                }
                if (n.Op == OpKind.Load)
                    throw new InvalidOperationException($"{plan.Name}: input of node %{n.Id} was not loaded");
                else if (TryInPlace(n, values, uses, reusable) is { } inPlace)
                    values[n.Id] = inPlace;
                else
                    values[n.Id] = Compute(plan, n, values);
                reusable[n.Id] = n.Op is not (OpKind.Load or OpKind.Cast or OpKind.Pack or OpKind.Pick) && values[n.Id] is Tensor;
                if (n.Op is OpKind.Pack or OpKind.Pick or OpKind.Cast)
                    foreach (int i in n.Inputs) reusable[i] = false;
                foreach (int i in n.Inputs)
                    if (--uses[i] == 0) { Free(values[i], reusable[i]); values[i] = null; }
            }
            var result = new object[targets.Count];
            for (int k = 0; k < targets.Count; k++)
            {
                var v = values[targets[k]]!;
                // A node listed twice as a target gets its own handle each time.
                bool repeated = targets.Where((t, i) => t == targets[k] && i != k).Any();
                result[k] = k > 0 && targets.Take(k).Contains(targets[k]) ? Alias(v) : v;
                if (targetUnshared is not null) targetUnshared[k] = reusable[targets[k]] && !repeated;
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
            foreach (var l in loads.Values) Release(l);
            loads.Clear();
        }
    }

    /// <summary>
    /// Add, Sub, Scale and TopK write into an input that this node is the last user of (saves an allocation
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
                {
                    // Scalars live in using-locals: a temporary may be finalized during the native call (see MergeOps.Accumulate64).
                    using var f = n.Scalar.ToScalar();
                    return Take(0).mul_(f);
                }
            case OpKind.TopK when Own(0):
                return MergeOps.TryTopKInPlace((Tensor)values[n.Inputs[0]]!, n.Sparsifier!.Density, ((TopK)n.Sparsifier).Rounding) ? Take(0) : null;
            case OpKind.Add when n.Inputs[0] != n.Inputs[1]:
                {
                    var a = (Tensor)values[n.Inputs[0]]!;
                    var b = (Tensor)values[n.Inputs[1]]!;
                    if (a.dtype != b.dtype) return null;
                    using var one = 1.0.ToScalar();
                    if (Own(0)) return Take(0).add_(b, one);
                    if (Own(1)) return Take(1).add_(a, one);
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

    /// <summary>
    /// Releases a value at its last use: an unshared tensor goes back to the pool (kept when it was
    /// rented there), anything else is disposed.
    /// </summary>
    void Free(object? v, bool unshared)
    {
        if (pool is null || v is not Tensor t) Release(v);
        else if (unshared) pool.Return(t);
        else pool.Discard(t);
    }

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
            case OpKind.Sub:
                {
                    // Whole large tensors (task vectors ahead of a top-k): into a pooled buffer, no page faults.
                    if (pool is not null && T(0).numel() >= PooledElements && FloatKernels.Applies(T(0), T(1)))
                    {
                        var r = pool.Rent(T(0).shape, ScalarType.Float32);
                        FloatKernels.Sub(T(0), T(1), r);
                        return r;
                    }
                    return MergeOps.Sub(T(0), T(1));
                }
            case OpKind.Add: return MergeOps.Add(T(0), T(1));
            case OpKind.Scale: return MergeOps.Scale(T(0), n.Scalar);
            case OpKind.TopK: return MergeOps.TopK(T(0), n.Sparsifier!.Density, ((TopK)n.Sparsifier).Rounding);
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
                    return MergeOps.Breadcrumbs(T(0), b.Density, b.Gamma, b.Rounding);
                }
            case OpKind.Della:
                {
                    var d = (Della)n.Sparsifier!;
                    using var noise = options.Noise(new NoiseRequest(plan.Name, n.Index, plan.Shape, options.Seed));
                    return MergeOps.Della(T(0), noise, d);
                }
            case OpKind.ElectSign: return MergeOps.ElectSign(S(0), n.Sign, n.Tie);
            case OpKind.Sum: return MergeOps.Sum(S(0));
            case OpKind.Mean: return MergeOps.Mean(S(0));
            case OpKind.DisjointMean: return MergeOps.DisjointMean(S(0));
            case OpKind.Weighted: return MergeOps.Weighted(S(0), n.Weights!);
            case OpKind.DisjointWeightedMean: return MergeOps.DisjointWeightedMean(S(0), n.Weights!);
            case OpKind.Lerp: return MergeOps.Lerp(S(0)[0], S(0)[1], n.Scalar);
            case OpKind.Slerp: return MergeOps.Slerp(S(0)[0], S(0)[1], n.Scalar);
            case OpKind.ModelStock: return MergeOps.ModelStock(S(0), T(1));
            case OpKind.Combine: return CombineOps.Apply(n.Combiner!, S(0));
            case OpKind.RescaleL1: return CombineOps.RescaleL1(T(0), T(1));
            default: throw new InvalidOperationException($"{plan.Name}: cannot evaluate {n.Op}");
        }
    }
}
