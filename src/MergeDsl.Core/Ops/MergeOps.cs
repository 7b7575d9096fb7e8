using MergeDsl.Core.Ir;
using MergeDsl.Core.Torch;
using TorchSharp;
using static TorchSharp.torch;

namespace MergeDsl.Core.Ops;

/// <summary>
/// The tensor math of every primitive, shared by the compiled executor and the reference
/// interpreter. Inputs are never modified; every result is a new tensor the caller owns.
/// Reductions, interpolations and Model Stock accumulate in float64 and return the inputs' dtype.
/// </summary>
public static class MergeOps
{
    /// <summary>k = round(density·n), halves rounded away from zero, clamped to [0, n].</summary>
    public static long KeepCount(double density, long n) =>
        Math.Clamp((long)Math.Round(density * n, MidpointRounding.AwayFromZero), 0, n);

    /// <summary>
    /// k for a density under a rounding rule: <see cref="KeepRounding.Nearest"/> as <see cref="KeepCount(double, long)"/>,
    /// <see cref="KeepRounding.Floor"/> = ⌊density·n⌋ (mergekit's <c>int(density * n)</c>); clamped to [0, n].
    /// </summary>
    public static long KeepCount(double density, long n, KeepRounding rounding) => rounding switch
    {
        KeepRounding.Floor => Math.Clamp((long)Math.Floor(density * n), 0, n),
        _ => KeepCount(density, n),
    };

    static Tensor Owned(Tensor t) => t.MoveToOuterDisposeScope();

    /// <summary>
    /// Flat positions ordered by descending |x|; equal magnitudes keep index order (lower index
    /// counts as larger). This single order defines every magnitude tie in MergeDsl.
    /// </summary>
    public static Tensor DescendingOrder(Tensor x)
    {
        using var scope = NewDisposeScope();
        var (_, idx) = x.abs().flatten().sort(dim: 0, descending: true, stable: true);
        return Owned(idx);
    }

    /// <summary>Bool mask of the k = round(density·n) largest |x| (ties: lower flat index wins).</summary>
    public static Tensor TopKMask(Tensor x, double density)
    {
        using var scope = NewDisposeScope();
        return Owned(TopKDropMask(x, KeepCount(density, x.numel())).logical_not_());
    }

    /// <summary>
    /// The complement of <see cref="TopKMask"/>, found in O(n): the k-th largest |x| (kthvalue) is the
    /// threshold t; everything below t is dropped, everything above (NaN counts as largest, as in the
    /// descending sort) kept, and of the entries equal to t the highest flat indices are dropped until
    /// exactly k remain. Same result as ordering by <see cref="DescendingOrder"/> (the reference path,
    /// <see cref="TopKMaskBySort(Tensor, double)"/>, which is also used when t itself is NaN).
    /// </summary>
    static Tensor TopKDropMask(Tensor x, long k)
    {
        using var scope = NewDisposeScope();
        long n = x.numel();
        if (k == n) return Owned(zeros(x.shape, ScalarType.Bool, x.device));
        if (k == 0) return Owned(ones(x.shape, ScalarType.Bool, x.device));
        var a = x.abs().flatten();
        var (t, _) = a.kthvalue(n - k + 1, 0);
        if (double.IsNaN(t.to(ScalarType.Float64).item<double>()))
            return Owned(TopKMaskBySort(x, k).logical_not_());
        var drop = a.lt(t);
        long extra = n - drop.sum().item<long>() - k; // kept so far: > t, NaN and = t; extra of the ties must go
        if (extra > 0)
        {
            var ties = a.eq(t).nonzero().flatten();
            long m = ties.numel();
            drop.SetTrue(0, ties.slice(0, m - extra, m, 1));
        }
        return Owned(drop.reshape(x.shape));
    }

    /// <summary>The sort-based definition of <see cref="TopKMask"/> (O(n log n); kept as the reference).</summary>
    internal static Tensor TopKMaskBySort(Tensor x, double density) => TopKMaskBySort(x, KeepCount(density, x.numel()));

    static Tensor TopKMaskBySort(Tensor x, long k)
    {
        using var scope = NewDisposeScope();
        long n = x.numel();
        var mask = zeros(n, ScalarType.Bool, x.device);
        if (k == n) mask = ones(n, ScalarType.Bool, x.device);
        else if (k > 0) mask.SetTrue(0, DescendingOrder(x).slice(0, 0, k, 1));
        return Owned(mask.reshape(x.shape));
    }

    static Tensor Keep(Tensor x, Tensor mask) => where(mask, x, zeros_like(x));

    /// <summary>Top-k sparsification of one tensor.</summary>
    public static Tensor TopK(Tensor x, double density) => TopK(x, density, KeepRounding.Nearest);

    /// <summary>Top-k sparsification of one tensor with k from <see cref="KeepCount(double, long, KeepRounding)"/>.</summary>
    public static Tensor TopK(Tensor x, double density, KeepRounding rounding)
    {
        using var scope = NewDisposeScope();
        long k = KeepCount(density, x.numel(), rounding);
        if (MagnitudeSelect.Applies(x))
        {
            var r = empty_like(x);
            if (MagnitudeSelect.Apply(x, r, k)) return Owned(r);
        }
        // masked_fill writes +0, as where(mask, x, 0) does, with one allocation instead of two.
        // Scalars are kept in using-locals: see Accumulate64.
        using var zero = 0.0.ToScalar();
        return Owned(x.masked_fill(TopKDropMask(x, k), zero));
    }

    /// <summary>
    /// <see cref="TopK(Tensor, double)"/> written over <paramref name="x"/> itself when it can be (float32, contiguous, CPU);
    /// returns false, leaving x unchanged, otherwise. The caller must own x exclusively.
    /// </summary>
    internal static bool TryTopKInPlace(Tensor x, double density, KeepRounding rounding = KeepRounding.Nearest) =>
        MagnitudeSelect.Applies(x) && MagnitudeSelect.Apply(x, x, KeepCount(density, x.numel(), rounding));

    /// <summary>
    /// DARE: entries whose noise is below density survive; survivors are divided by density
    /// (<see cref="DareRescale.Inverse"/>), scaled to keep the L1 norm (<see cref="DareRescale.L1"/>), or kept.
    /// </summary>
    public static Tensor Dare(Tensor x, Tensor noise, double density, DareRescale rescale)
    {
        using var scope = NewDisposeScope();
        using var d = density.ToScalar(); // kept alive across the native calls (see Accumulate64)
        var mask = noise.to(x.device).lt(d);
        var kept = Keep(x, mask);
        switch (rescale)
        {
            case DareRescale.Inverse:
                kept = kept.div(d);
                break;
            case DareRescale.L1:
                double before = x.abs().to(ScalarType.Float64).sum().item<double>();
                double after = kept.abs().to(ScalarType.Float64).sum().item<double>();
                if (after > 0)
                {
                    using var ratio = (before / after).ToScalar();
                    kept = kept.to(ScalarType.Float64).mul(ratio).to(x.dtype);
                }
                break;
        }
        return Owned(kept);
    }

    /// <summary>
    /// Model Breadcrumbs: in descending-magnitude order, drop the first round(gamma·n) entries
    /// (outliers), keep the next k = round(density·n), drop the rest. When round(gamma·n) + k &gt; n
    /// fewer outliers are dropped so that k entries remain.
    /// </summary>
    public static Tensor Breadcrumbs(Tensor x, double density, double gamma) => Breadcrumbs(x, density, gamma, KeepRounding.Nearest);

    /// <summary>
    /// <see cref="Breadcrumbs(Tensor, double, double)"/> with both counts (kept k and dropped outliers)
    /// taken under <paramref name="rounding"/> (mergekit floors both).
    /// </summary>
    public static Tensor Breadcrumbs(Tensor x, double density, double gamma, KeepRounding rounding)
    {
        using var scope = NewDisposeScope();
        long n = x.numel();
        long k = KeepCount(density, n, rounding);
        long top = Math.Min(KeepCount(gamma, n, rounding), n - k);
        var mask = zeros(n, ScalarType.Bool, x.device);
        if (k > 0) mask.SetTrue(0, DescendingOrder(x).slice(0, top, top + k, 1));
        return Owned(Keep(x, mask.reshape(x.shape)));
    }

    /// <summary>
    /// DELLA keep probabilities: per row (first dimension; a vector is one row), rank r = 0 for the
    /// smallest |x| up to c − 1 for the largest (ties as in <see cref="DescendingOrder"/>);
    /// p = density − ε + 2ε·r/(c − 1) (p = density when c = 1).
    /// </summary>
    public static Tensor DellaProbabilities(Tensor x, double density, double epsilon) =>
        DellaProbabilities(x, density, epsilon, DellaRank.Rows);

    /// <summary>
    /// DELLA keep probabilities ranked per <paramref name="rank"/>: <see cref="DellaRank.Rows"/> as
    /// <see cref="DellaProbabilities(Tensor, double, double)"/>; <see cref="DellaRank.Dim1"/> ranks
    /// along dimension 1 (every fibre x[i, :, k, …] separately; the same as rows for 1-D and 2-D tensors).
    /// </summary>
    public static Tensor DellaProbabilities(Tensor x, double density, double epsilon, DellaRank rank)
    {
        using var scope = NewDisposeScope();
        if (rank == DellaRank.Dim1 && x.dim() >= 3)
        {
            // Move dimension 1 last, rank each resulting row, move it back.
            var moved = x.transpose(1, -1).contiguous();
            var p = RowProbabilities(moved.reshape(-1, moved.shape[^1]), density, epsilon, x.device);
            return Owned(p.reshape(moved.shape).transpose(1, -1).contiguous());
        }
        var rows = x.dim() >= 2 ? x.reshape(x.shape[0], -1) : x.reshape(1, -1);
        return Owned(RowProbabilities(rows, density, epsilon, x.device).reshape(x.shape));
    }

    static Tensor RowProbabilities(Tensor rows, double density, double epsilon, Device device)
    {
        long c = rows.shape[1];
        if (c <= 1) return ScalarArgs.FullLike(rows, density, ScalarType.Float64);
        var (_, idx) = rows.abs().sort(dim: 1, descending: true, stable: true);
        var positions = ScalarArgs.Range(c, ScalarType.Int64, device).expand(rows.shape[0], c).contiguous();
        var descRank = zeros(rows.shape, ScalarType.Int64, device).scatter_(1, idx, positions);
        var norm = descRank.neg().Plus(c - 1).to(ScalarType.Float64).Over((double)(c - 1));
        return norm.Times(2 * epsilon).Plus(density - epsilon);
    }

    /// <summary>DELLA (MagPrune): keep where noise &lt; p, survivors divided by p when rescaling.</summary>
    public static Tensor Della(Tensor x, Tensor noise, double density, double epsilon, bool rescale) =>
        Della(x, noise, new Ir.Della(density, epsilon, rescale));

    /// <summary>
    /// DELLA with every option of <paramref name="d"/>: keep where noise &lt; p (ranked per
    /// <see cref="Ir.Della.Rank"/>), survivors divided by p when <see cref="Ir.Della.Rescale"/>.
    /// </summary>
    public static Tensor Della(Tensor x, Tensor noise, Ir.Della d)
    {
        using var scope = NewDisposeScope();
        if (d.Density >= 1.0) return Owned(x.clone());
        var p = DellaProbabilities(x, d.Density, d.Epsilon, d.Rank);
        var mask = noise.to(x.device).to(ScalarType.Float64).lt(p);
        var kept = Keep(x, mask);
        if (d.Rescale) kept = kept.to(ScalarType.Float64).div(p).to(x.dtype);
        return Owned(kept);
    }

    /// <summary>
    /// TIES sign election over a stack: elected = sign(Σ xᵢ) (mass) or sign(Σ sign xᵢ) (count);
    /// entries whose sign differs from the elected sign become +0 (so where the elected sign is 0
    /// every entry becomes 0).
    /// </summary>
    public static Tensor[] ElectSign(IReadOnlyList<Tensor> stack, SignRule rule) => ElectSign(stack, rule, SignTie.Zero);

    /// <summary>
    /// <see cref="ElectSign(IReadOnlyList{Tensor}, SignRule)"/> with a rule for a vote of exactly 0:
    /// <see cref="SignTie.Zero"/> elects 0 (every entry is dropped), <see cref="SignTie.Positive"/>
    /// elects +1 (mergekit's <c>sum &gt;= 0</c>), so the positive entries survive.
    /// </summary>
    public static Tensor[] ElectSign(IReadOnlyList<Tensor> stack, SignRule rule, SignTie tie)
    {
        if (rule == SignRule.Mass && TiesKernels.Applies(stack))
        {
            var outs = stack.Select(x => empty_like(x)).ToArray();
            if (TiesKernels.ElectSignMass(stack, outs, tie == SignTie.Positive)) return outs;
            foreach (var t in outs) t.Dispose();
        }
        return ElectSignOps(stack, rule, tie);
    }

    /// <summary>The op-by-op definition of <see cref="ElectSign(IReadOnlyList{Tensor}, SignRule, SignTie)"/> (any dtype, NaN semantics of torch.sign).</summary>
    internal static Tensor[] ElectSignOps(IReadOnlyList<Tensor> stack, SignRule rule, SignTie tie = SignTie.Zero)
    {
        using var scope = NewDisposeScope();
        var elected = rule == SignRule.Mass
            ? Accumulate64(stack, x => x).sign()
            : Accumulate64(stack, x => x.sign()).sign();
        if (tie == SignTie.Positive)
        {
            using var zero = 0.0.ToScalar();
            using var one = 1.0.ToScalar();
            elected = elected.masked_fill(elected.eq(zero), one);
        }
        var result = new Tensor[stack.Count];
        for (int i = 0; i < result.Length; i++)
        {
            var x = stack[i];
            result[i] = where(x.sign().eq(elected), x, zeros_like(x)).MoveToOuterDisposeScope();
        }
        return result;
    }

    /// <summary>
    /// Σᵢ f(xᵢ) in one float64 buffer, added in stack order (in place: no N-fold stacked copy,
    /// which matters for memory traffic on large tensors).
    /// </summary>
    static Tensor Accumulate64(IReadOnlyList<Tensor> stack, Func<Tensor, Tensor> f)
    {
        var acc = f(stack[0]).to(ScalarType.Float64, copy: true);
        // add_(x) builds its alpha Scalar as a temporary that the GC may finalize during the native
        // call (TorchSharp reads .Handle and keeps no reference): libtorch then read a freed Scalar
        // ("toDouble ... Scalar.h:140") in large merges. A using-local stays alive to the end.
        using var one = 1.0.ToScalar();
        for (int i = 1; i < stack.Count; i++) acc.add_(f(stack[i]), one);
        return acc;
    }

    /// <summary>Σ xᵢ.</summary>
    public static Tensor Sum(IReadOnlyList<Tensor> stack)
    {
        using var scope = NewDisposeScope();
        return Owned(Accumulate64(stack, x => x).to(stack[0].dtype));
    }

    /// <summary>(Σ xᵢ)/N.</summary>
    public static Tensor Mean(IReadOnlyList<Tensor> stack)
    {
        using var scope = NewDisposeScope();
        using var n = ((double)stack.Count).ToScalar();
        return Owned(Accumulate64(stack, x => x).div_(n).to(stack[0].dtype));
    }

    /// <summary>Σ xᵢ / max(1, #{i : xᵢ ≠ 0}) per element.</summary>
    public static Tensor DisjointMean(IReadOnlyList<Tensor> stack)
    {
        if (TiesKernels.Applies(stack))
        {
            var r = empty_like(stack[0]);
            if (TiesKernels.DisjointMean(stack, r)) return r;
            r.Dispose();
        }
        return DisjointMeanOps(stack);
    }

    /// <summary>The op-by-op definition of <see cref="DisjointMean"/>.</summary>
    internal static Tensor DisjointMeanOps(IReadOnlyList<Tensor> stack)
    {
        using var scope = NewDisposeScope();
        using var zero = 0.0.ToScalar();
        using var one = 1.0.ToScalar();
        var count = Accumulate64(stack, x => x.ne(zero)).clamp_min_(one);
        return Owned(Accumulate64(stack, x => x).div_(count).to(stack[0].dtype));
    }

    /// <summary>
    /// Σᵢ xᵢ / Σᵢ wᵢ·[xᵢ ≠ 0] per element, a divisor of 0 replaced by 1 (in float64). The entries are
    /// expected already multiplied by their weights (mergekit's TIES normalisation); with every wᵢ = 1
    /// this is <see cref="DisjointMean"/>.
    /// </summary>
    public static Tensor DisjointWeightedMean(IReadOnlyList<Tensor> stack, IReadOnlyList<double> weights)
    {
        using var scope = NewDisposeScope();
        using var zero = 0.0.ToScalar();
        using var one = 1.0.ToScalar();
        var divisor = zeros(stack[0].shape, ScalarType.Float64, stack[0].device);
        for (int i = 0; i < stack.Count; i++)
        {
            using var w = weights[i].ToScalar();
            divisor.add_(stack[i].ne(zero).to(ScalarType.Float64).mul_(w), one);
        }
        divisor.masked_fill_(divisor.eq(zero), one);
        return Owned(Accumulate64(stack, x => x).div_(divisor).to(stack[0].dtype));
    }

    /// <summary>Σ wᵢ·xᵢ (each product and the sum in float64).</summary>
    public static Tensor Weighted(IReadOnlyList<Tensor> stack, IReadOnlyList<double> weights)
    {
        using var scope = NewDisposeScope();
        using var one = 1.0.ToScalar();
        var ws = weights.Select(w => w.ToScalar()).ToArray();
        try
        {
            var acc = stack[0].to(ScalarType.Float64, copy: true).mul_(ws[0]);
            for (int i = 1; i < stack.Count; i++) acc.add_(stack[i].to(ScalarType.Float64, copy: true).mul_(ws[i]), one);
            return Owned(acc.to(stack[0].dtype));
        }
        finally
        {
            foreach (var w in ws) w.Dispose();
        }
    }

    /// <summary>a + b.</summary>
    public static Tensor Add(Tensor a, Tensor b)
    {
        using var one = 1.0.ToScalar();
        return a.add(b, one);
    }

    /// <summary>a − b.</summary>
    public static Tensor Sub(Tensor a, Tensor b) => a.sub(b); // TorchSharp passes no alpha Scalar here

    /// <summary>x·factor (in x's dtype).</summary>
    public static Tensor Scale(Tensor x, double factor)
    {
        using var f = factor.ToScalar();
        return x.mul(f);
    }

    /// <summary>(1 − t)·a + t·b, in float64.</summary>
    public static Tensor Lerp(Tensor a, Tensor b, double t)
    {
        using var scope = NewDisposeScope();
        using var s0 = (1.0 - t).ToScalar();
        using var s1 = t.ToScalar();
        using var one = 1.0.ToScalar();
        var r = a.to(ScalarType.Float64).mul(s0).add(b.to(ScalarType.Float64).mul(s1), one);
        return Owned(r.to(a.dtype));
    }

    /// <summary>|cos| above which slerp falls back to lerp (mergekit's DOT_THRESHOLD).</summary>
    public const double ParallelThreshold = 0.9995;

    /// <summary>
    /// Spherical interpolation (mergekit's formula): with the angle θ between a and b (as flat
    /// vectors), sin((1−t)θ)/sin θ · a + sin(tθ)/sin θ · b; lerp when |cos θ| &gt; 0.9995 or a norm is 0.
    /// </summary>
    public static Tensor Slerp(Tensor a, Tensor b, double t)
    {
        using var scope = NewDisposeScope();
        var a64 = a.to(ScalarType.Float64).flatten();
        var b64 = b.to(ScalarType.Float64).flatten();
        double na = a64.norm().item<double>(), nb = b64.norm().item<double>();
        if (na == 0 || nb == 0) return Owned(Lerp(a, b, t));
        double dot = a64.dot(b64).item<double>() / (na * nb);
        if (Math.Abs(dot) > ParallelThreshold || double.IsNaN(dot)) return Owned(Lerp(a, b, t));
        double theta = Math.Acos(Math.Clamp(dot, -1.0, 1.0));
        double sinTheta = Math.Sin(theta);
        double s0 = Math.Sin((1 - t) * theta) / sinTheta;
        double s1 = Math.Sin(t * theta) / sinTheta;
        var r = a.to(ScalarType.Float64).Times(s0).Plus(b.to(ScalarType.Float64).Times(s1));
        return Owned(r.to(a.dtype));
    }

    /// <summary>The Model Stock ratio t = k·cos/((k−1)·cos + 1) for k experts and their mean pairwise cosine.</summary>
    public static double ModelStockRatio(int k, double cos) => k * cos / ((k - 1) * cos + 1);

    /// <summary>
    /// Model Stock: cos = mean over pairs i &lt; j of cos(τᵢ, τⱼ) with τᵢ = θᵢ − θ₀ flattened (0 when a
    /// norm is 0); t = k·cos/((k−1)·cos + 1); result t·mean(θᵢ) + (1 − t)·θ₀.
    /// </summary>
    public static Tensor ModelStock(IReadOnlyList<Tensor> experts, Tensor baseTensor)
    {
        using var scope = NewDisposeScope();
        var b64 = baseTensor.to(ScalarType.Float64);
        var taus = experts.Select(e => e.to(ScalarType.Float64).sub(b64).flatten()).ToArray();
        double cosSum = 0;
        int pairs = 0;
        for (int i = 0; i < taus.Length; i++)
            for (int j = i + 1; j < taus.Length; j++)
            {
                double ni = taus[i].norm().item<double>(), nj = taus[j].norm().item<double>();
                cosSum += ni == 0 || nj == 0 ? 0.0 : taus[i].dot(taus[j]).item<double>() / (ni * nj);
                pairs++;
            }
        double cos = cosSum / pairs;
        double t = ModelStockRatio(taus.Length, cos);
        using var count = ((double)experts.Count).ToScalar();
        var avg = Accumulate64(experts, x => x).div_(count);
        var r = avg.Times(t).Plus(b64.Times(1 - t));
        return Owned(r.to(baseTensor.dtype));
    }

    /// <summary>
    /// |x| rounded to float32, as its IEEE-754 bit pattern (int64): for non-negative floats the
    /// integer order is the value order, which makes exact histogram selection possible. Computed
    /// arithmetically (frexp) because TorchSharp has no dtype-reinterpreting view; works on any device.
    /// </summary>
    public static Tensor MagnitudeBits(Tensor x)
    {
        using var scope = NewDisposeScope();
        var a = x.abs().to(ScalarType.Float32).flatten();
        var (m, e) = a.frexp();
        // Every Scalar lives in a using-local: an implicit temporary may be finalized by the GC during
        // the native call (seen here as "alpha must not be a floating point number" in the test suite).
        using var bias = 126L.ToScalar();
        using var two23i = 8388608L.ToScalar();
        using var two = 2.0.ToScalar();
        using var oneD = 1.0.ToScalar();
        using var oneI = 1L.ToScalar();
        using var two23 = 8388608.0.ToScalar();
        using var two149 = Math.Pow(2, 149).ToScalar();
        using var minNormal = Math.Pow(2, -126).ToScalar();
        using var inf = 0x7F800000L.ToScalar();
        using var nan = 0x7FC00000L.ToScalar();
        var normal = e.to(ScalarType.Int64).add(bias, oneI).mul(two23i)
            .add(m.to(ScalarType.Float64).mul(two).sub(oneD).mul(two23).to(ScalarType.Int64), oneI);
        var sub = a.to(ScalarType.Float64).mul(two149).to(ScalarType.Int64);
        var key = where(a.lt(minNormal), sub, normal);
        key = where(a.isinf(), full_like(key, inf), key);
        key = where(a.isnan(), full_like(key, nan), key);
        return Owned(key);
    }

    /// <summary>
    /// Global top-k applied to one tensor: keep entries whose magnitude bits exceed
    /// <paramref name="thresholdBits"/>, plus the first <paramref name="tieQuota"/> entries (by flat
    /// index) that equal it. Returns the result and the number of ties used.
    /// </summary>
    public static (Tensor Result, long TiesUsed) ApplyThreshold(Tensor x, long thresholdBits, long tieQuota)
    {
        using var scope = NewDisposeScope();
        using var threshold = thresholdBits.ToScalar();
        using var quota = tieQuota.ToScalar();
        var bits = MagnitudeBits(x);
        var keep = bits.gt(threshold);
        long used = 0;
        if (tieQuota > 0)
        {
            var eq = bits.eq(threshold);
            var rank = eq.to(ScalarType.Int64).cumsum(0L);
            var tie = eq.logical_and(rank.le(quota));
            used = tie.sum().item<long>();
            keep = keep.logical_or(tie);
        }
        var r = Keep(x, keep.reshape(x.shape));
        return (Owned(r), used);
    }
}
