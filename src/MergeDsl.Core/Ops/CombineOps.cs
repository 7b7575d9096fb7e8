using MergeDsl.Core.Ir;
using MergeDsl.Core.Torch;
using TorchSharp;
using static TorchSharp.torch;

namespace MergeDsl.Core.Ops;

/// <summary>
/// The kernels of the <see cref="Combiner"/>s and of mergekit's L1 rescale. Each follows mergekit's
/// code for the method (read, not copied; constants and fallbacks as there), computes in float64 and
/// returns the first input's dtype. Inputs are never modified; the caller owns every result.
/// </summary>
public static class CombineOps
{
    static Tensor Owned(Tensor t) => t.MoveToOuterDisposeScope();

    static Tensor F64(Tensor t) => t.to(ScalarType.Float64);

    /// <summary>Runs a resolved combiner (every factor constant) on a stack of its arity.</summary>
    public static Tensor Apply(Combiner resolved, IReadOnlyList<Tensor> stack) => resolved switch
    {
        Ir.NuSlerp n => NuSlerp(stack[0], stack[1], Combiner.Value(n.FirstWeight), Combiner.Value(n.SecondWeight), n.RowWise, n.Flatten),
        Ir.MultiSlerp m => MultiSlerp(stack, m.Weights.Count == 0 ? Enumerable.Repeat(1.0, stack.Count).ToArray() : m.Weights.Select(Combiner.Value).ToArray(),
            m.NormalizeWeights, m.Eps),
        Ir.Karcher k => Karcher(stack, k.MaxIterations, k.Tolerance),
        Ir.Sce s => Sce(stack, Combiner.Value(s.SelectTopK)),
        Ir.NearSwap n => NearSwap(stack[0], stack[1], Combiner.Value(n.T)),
        Ir.ArceeFusion => ArceeFusion(stack[0], stack[1]),
        _ => throw new ArgumentException($"unknown combiner {resolved.GetType().Name}"),
    };

    /// <summary>NuSLERP's t from the two weights: w₁/(w₀ + w₁), 0.5 when |w₀ + w₁| &lt; 1e-6.</summary>
    public static double NuSlerpT(double w0, double w1) => Math.Abs(w0 + w1) < 1e-6 ? 0.5 : w1 / (w0 + w1);

    /// <summary>
    /// NuSLERP of a and b (see <see cref="Ir.NuSlerp"/>): vectors are the whole flattened tensors
    /// (<paramref name="flatten"/> or a 1-D tensor), else those along the last dimension, or along
    /// dimension 0 with <paramref name="rowWise"/>. Per vector: unit vectors with norms clamped at 1e-7,
    /// θ = acos(clamp(cos, −1, 1)), (sin((1−t)θ)·a + sin(tθ)·b)/sin θ, lerp where |sin θ| &lt; 1e-8.
    /// </summary>
    public static Tensor NuSlerp(Tensor a, Tensor b, double w0, double w1, bool rowWise, bool flatten)
    {
        using var scope = NewDisposeScope();
        double t = NuSlerpT(w0, w1);
        Tensor v0 = F64(a), v1 = F64(b);
        bool transpose = !flatten && rowWise && a.dim() >= 2;
        if (transpose) { v0 = v0.transpose(0, -1); v1 = v1.transpose(0, -1); }
        var shape = v0.shape;
        long width = flatten || a.dim() <= 1 ? a.numel() : shape[^1];
        var m0 = v0.reshape(-1, width);
        var m1 = v1.reshape(-1, width);
        using var tiny = 1e-7.ToScalar(); // Scalars in using-locals outlive the native calls (see MergeOps.Accumulate64)
        var u0 = m0.div(m0.square().sum(1, keepdim: true).sqrt().clamp_min(tiny));
        var u1 = m1.div(m1.square().sum(1, keepdim: true).sqrt().clamp_min(tiny));
        var theta = u0.mul(u1).sum(1, keepdim: true).ClampTo(-1, 1).acos();
        var sinTheta = theta.sin();
        var slerp = theta.Times(1 - t).sin().mul(m0).Plus(theta.Times(t).sin().mul(m1)).div(sinTheta);
        var lerp = m0.Times(1 - t).Plus(m1.Times(t));
        var r = where(sinTheta.abs().Below(1e-8), lerp, slerp).reshape(shape);
        if (transpose) r = r.transpose(0, -1);
        return Owned(r.contiguous().to(a.dtype));
    }

    /// <summary>
    /// Multi-SLERP (mergekit's <c>multislerp</c>): xᵢ flattened, w normalised to sum 1 when asked;
    /// uᵢ = xᵢ/(‖xᵢ‖ + ε); m = Σ wᵢuᵢ normalised (when ‖m‖ &lt; ε: Σ wᵢxᵢ for two inputs, an error for
    /// more); tangent vectors uᵢ − (uᵢ·m)m averaged with w into v; result
    /// (m·cos‖v‖' + v·sin‖v‖'/‖v‖')·Σ wᵢ‖xᵢ‖ with ‖v‖' = ‖v‖ + ε. One input is returned as it is.
    /// </summary>
    public static Tensor MultiSlerp(IReadOnlyList<Tensor> stack, IReadOnlyList<double> weights, bool normalize, double eps)
    {
        using var scope = NewDisposeScope();
        if (stack.Count == 1) return Owned(stack[0].clone());
        var w = weights.ToArray();
        if (normalize)
        {
            double total = w.Sum();
            w = w.Select(x => x / total).ToArray();
        }
        var xs = stack.Select(x => F64(x).flatten()).ToArray();
        var norms = xs.Select(x => x.norm().item<double>()).ToArray();
        var units = xs.Select((x, i) => x.Over(norms[i] + eps)).ToArray();
        Tensor Weighted(Tensor[] vs) => vs.Select((v, i) => v.Times(w[i])).Aggregate((p, q) => p.Plus(q));
        var mean = Weighted(units);
        double meanNorm = mean.norm().item<double>();
        if (meanNorm < eps)
        {
            if (stack.Count != 2)
                throw new ArgumentException("multislerp: the weighted sum of the unit vectors is zero (antipodal inputs with balancing weights)");
            return Owned(Weighted(xs).reshape(stack[0].shape).to(stack[0].dtype));
        }
        mean = mean.Over(meanNorm);
        var tangents = units.Select(u => u.sub(mean.Times(u.dot(mean).item<double>()))).ToArray();
        var v = Weighted(tangents);
        double vNorm = v.norm().item<double>() + eps;
        double scale = norms.Select((n, i) => n * w[i]).Sum();
        var r = mean.Times(Math.Cos(vNorm)).Plus(v.Times(Math.Sin(vNorm) / vNorm)).Times(scale);
        return Owned(r.reshape(stack[0].shape).to(stack[0].dtype));
    }

    /// <summary>
    /// Karcher mean (mergekit's <c>karcher_merge_tensors</c> with equal weights αᵢ = 1/N): unit vectors of
    /// the inputs with a norm above <paramref name="tolerance"/> (weights renormalised over them); start at
    /// their normalised weighted mean; each step T = Σ αᵢ·θᵢ/sin θᵢ·(uᵢ − cos θᵢ·u) over the inputs with
    /// θᵢ ≥ tol, stop when ‖T‖ &lt; tol, else u ← cos‖T‖·u + sin‖T‖·T/‖T‖ renormalised. Result
    /// (Σ αᵢ‖xᵢ‖)·u over all inputs; zeros when no input has a norm above tol.
    /// </summary>
    public static Tensor Karcher(IReadOnlyList<Tensor> stack, int maxIterations, double tolerance)
    {
        using var scope = NewDisposeScope();
        if (stack.Count == 1) return Owned(stack[0].clone());
        double alpha = 1.0 / stack.Count;
        var xs = stack.Select(x => F64(x).flatten()).ToArray();
        var norms = xs.Select(x => x.norm().item<double>()).ToArray();
        var valid = Enumerable.Range(0, xs.Length).Where(i => norms[i] > tolerance).ToArray();
        if (valid.Length == 0) return Owned(zeros_like(stack[0]));
        var units = valid.Select(i => xs[i].Over(norms[i])).ToArray();
        double a = 1.0 / valid.Length; // equal weights renormalised over the valid inputs
        var u = units.Select(x => x.Times(a)).Aggregate((p, q) => p.Plus(q));
        double uNorm = u.norm().item<double>();
        u = uNorm < tolerance ? units[0].clone() : u.Over(uNorm);
        for (int iter = 0; iter < maxIterations; iter++)
        {
            var step = zeros_like(u);
            foreach (var ui in units)
            {
                double dot = Math.Clamp(u.dot(ui).item<double>(), -1.0, 1.0);
                double theta = Math.Acos(dot);
                if (theta < tolerance) continue;
                step = step.Plus(ui.sub(u.Times(dot)).Times(a * theta / Math.Sin(theta)));
            }
            double stepNorm = step.norm().item<double>();
            if (stepNorm < tolerance) break;
            u = u.Times(Math.Cos(stepNorm)).Plus(step.Times(Math.Sin(stepNorm) / stepNorm));
            double n = u.norm().item<double>();
            if (n > tolerance) u = u.Over(n);
        }
        double s = norms.Sum() * alpha;
        return Owned(u.Times(s).reshape(stack[0].shape).to(stack[0].dtype));
    }

    /// <summary>
    /// SCE over task vectors (mergekit's <c>sce</c>; see <see cref="Ir.Sce"/>). Select (when
    /// selectTopK &lt; 1): k = ⌊selectTopK·#{var ≠ 0}⌋ elements of largest population variance across the
    /// stack are kept in every τᵢ (k = 0 keeps none; variance ties: lower flat index); Calculate:
    /// wᵢ = mean(τᵢ²)/Σⱼ mean(τⱼ²) (1/N each when that sum is below 1e-6); Erase: mᵢ = [sign τᵢ = s] with
    /// s = +1 where Σ τᵢ ≥ 0, else −1; result Σ wᵢmᵢτᵢ / max(Σ wᵢmᵢ, 1e-6).
    /// </summary>
    public static Tensor Sce(IReadOnlyList<Tensor> stack, double selectTopK)
    {
        using var scope = NewDisposeScope();
        var xs = stack.Select(F64).ToArray();
        int count = xs.Length;
        if (selectTopK < 1)
        {
            var mean = xs.Aggregate((p, q) => p.Plus(q)).Over(count);
            var variance = xs.Select(x => x.sub(mean).square()).Aggregate((p, q) => p.Plus(q)).Over(count);
            long nonzero = variance.count_nonzero().item<long>();
            long k = selectTopK <= 0 ? 0 : (long)Math.Floor(nonzero * selectTopK);
            var mask = zeros(variance.numel(), ScalarType.Bool);
            if (k > 0) mask.SetTrue(0, MergeOps.DescendingOrder(variance).slice(0, 0, k, 1));
            mask = mask.reshape(variance.shape);
            xs = xs.Select(x => where(mask, x, zeros_like(x))).ToArray();
        }
        var total = xs.Aggregate((p, q) => p.Plus(q));
        var elected = where(total.Below(0), ScalarArgs.FullLike(total, -1, ScalarType.Float64), ScalarArgs.FullLike(total, 1, ScalarType.Float64));
        var weights = xs.Select(x => x.square().mean().item<double>()).ToArray();
        double weightSum = weights.Sum();
        weights = Math.Abs(weightSum) < 1e-6 ? weights.Select(_ => 1.0 / count).ToArray() : weights.Select(w => w / weightSum).ToArray();
        Tensor? merged = null, divisor = null;
        for (int i = 0; i < count; i++)
        {
            var ew = xs[i].sign().eq(elected).to(ScalarType.Float64).Times(weights[i]);
            var term = xs[i].mul(ew);
            merged = merged is null ? term : merged.Plus(term);
            divisor = divisor is null ? ew : divisor.Plus(ew);
        }
        using var floor = 1e-6.ToScalar();
        var r = merged!.div(divisor!.clamp_min(floor));
        return Owned(r.to(stack[0].dtype));
    }

    /// <summary>NearSwap of the base a and b: w = clamp(t / max(|a − b|, 1e-6), 0, 1); w·b + (1 − w)·a.</summary>
    public static Tensor NearSwap(Tensor a, Tensor b, double t)
    {
        using var scope = NewDisposeScope();
        Tensor a64 = F64(a), b64 = F64(b);
        using var floor = 1e-6.ToScalar();
        var w = a64.sub(b64).abs().clamp_min(floor).reciprocal().Times(t).ClampTo(0, 1);
        var r = w.mul(b64).Plus(w.neg().Plus(1.0).mul(a64));
        return Owned(r.to(a.dtype));
    }

    /// <summary>
    /// The quantile mergekit's Arcee Fusion reads: the entry at index ⌊q·(n − 1)⌋ of the ascending sort
    /// (no interpolation), found with kthvalue.
    /// </summary>
    static double Quantile(Tensor flat, double q)
    {
        long index = (long)Math.Floor(q * (flat.numel() - 1));
        var (v, _) = flat.kthvalue(index + 1, 0);
        return v.item<double>();
    }

    /// <summary>
    /// Arcee Fusion of the base a and b: importance = |b − a|·KL, KL = Σ p·log(p/q) along the last
    /// dimension with p = softmax(b) + 1e-8, q = softmax(a) + 1e-8 (a vector is one row); threshold
    /// median + 1.5·(Q3 − Q1) of the importances (quantiles as <see cref="Quantile"/>, over every entry:
    /// mergekit samples 10⁶ entries of larger tensors at random); result a + (b − a)·[importance ≥ threshold].
    /// </summary>
    public static Tensor ArceeFusion(Tensor a, Tensor b)
    {
        using var scope = NewDisposeScope();
        Tensor a64 = F64(a), b64 = F64(b);
        if (a.dim() == 0) { a64 = a64.reshape(1); b64 = b64.reshape(1); }
        var delta = b64.sub(a64);
        var p = b64.softmax(-1).Plus(1e-8);
        var q = a64.softmax(-1).Plus(1e-8);
        var kl = p.mul(p.div(q).log()).sum(-1, keepdim: true);
        var importance = delta.abs().mul(kl);
        var flat = importance.flatten();
        double median = Quantile(flat, 0.5), q1 = Quantile(flat, 0.25), q3 = Quantile(flat, 0.75);
        double threshold = median + 1.5 * (q3 - q1);
        using var th = threshold.ToScalar(); // a using-local outlives the native call (see MergeOps.Accumulate64)
        var keep = importance.ge(th);
        var r = a64.Plus(where(keep, delta, zeros_like(delta)));
        return Owned(r.reshape(a.shape).to(a.dtype));
    }

    /// <summary>
    /// mergekit's L1 rescale (<c>rescaled_masked_tensor</c>, norm l1): x·‖reference‖₁/‖x‖₁ in float64,
    /// x unchanged (a copy) when either norm is below 1e-7.
    /// </summary>
    public static Tensor RescaleL1(Tensor x, Tensor reference)
    {
        using var scope = NewDisposeScope();
        double before = reference.abs().to(ScalarType.Float64).sum().item<double>();
        double after = x.abs().to(ScalarType.Float64).sum().item<double>();
        if (before < 1e-7 || after < 1e-7) return Owned(x.clone());
        return Owned(F64(x).Times(before / after).to(x.dtype));
    }
}
