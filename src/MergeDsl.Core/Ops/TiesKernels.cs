using System.Numerics;
using MergeDsl.Core.Checkpoints;
using static TorchSharp.torch;

namespace MergeDsl.Core.Ops;

/// <summary>
/// Sign election (mass rule) and the disjoint mean over a stack of float32 CPU tensors in one loop
/// each, with the float64 arithmetic of the op-by-op definitions in <see cref="MergeOps"/> done in the
/// same order (so results are bit-identical): the op-by-op versions make about ten full passes with
/// mixed-dtype casts and cost ~20× more. They only handle finite inputs; on a NaN or ±Inf they return
/// false and the caller uses the op-by-op definition (which fixes the NaN semantics).
/// </summary>
internal static unsafe class TiesKernels
{
    /// <summary>True when every entry is a contiguous float32 CPU tensor with the same number of elements.</summary>
    public static bool Applies(IReadOnlyList<Tensor> stack)
    {
        if (stack.Count == 0 || !NativeTensors.Available) return false;
        long n = stack[0].numel();
        foreach (var t in stack)
            if (t.dtype != ScalarType.Float32 || t.device_type != TorchSharp.DeviceType.CPU || !t.is_contiguous() || t.numel() != n)
                return false;
        return true;
    }

    static float*[] Pointers(IReadOnlyList<Tensor> ts)
    {
        var p = new float*[ts.Count];
        for (int i = 0; i < p.Length; i++) p[i] = (float*)NativeTensors.DataPointer(ts[i]);
        return p;
    }

    static int Sign(double v) => v > 0 ? 1 : v < 0 ? -1 : 0;

    // Vector lanes: the same arithmetic as the scalar loops (float64 adds in stack order; −1/0/+1
    // signs; one float64 division rounded once to float32 by Narrow).
    static bool Finite(Vector<double> s) => Vector.EqualsAll(s - s, Vector<double>.Zero);

    static Vector<double> Sign(Vector<double> s) =>
        Vector.ConditionalSelect(Vector.GreaterThan(s, Vector<double>.Zero), Vector<double>.One, Vector<double>.Zero)
        - Vector.ConditionalSelect(Vector.LessThan(s, Vector<double>.Zero), Vector<double>.One, Vector<double>.Zero);

    // mergekit's election: +1 where the sum is ≥ 0 (the sums here are finite), −1 elsewhere.
    static Vector<double> NonNegativeSign(Vector<double> s) =>
        Vector.ConditionalSelect(Vector.GreaterThanOrEqual(s, Vector<double>.Zero), Vector<double>.One, -Vector<double>.One);

    static Vector<float> Sign(Vector<float> s) =>
        Vector.ConditionalSelect(Vector.GreaterThan(s, Vector<float>.Zero), Vector<float>.One, Vector<float>.Zero)
        - Vector.ConditionalSelect(Vector.LessThan(s, Vector<float>.Zero), Vector<float>.One, Vector<float>.Zero);

    static Vector<float> NonZero(Vector<float> v) =>
        Vector.ConditionalSelect(Vector.Equals(v, Vector<float>.Zero), Vector<float>.Zero, Vector<float>.One);

    /// <summary>
    /// elected = sign(Σ xᵢ) (float64, in stack order); outᵢ = xᵢ where sign(xᵢ) = elected, else +0.
    /// False (outputs unspecified) when an input is not finite.
    /// </summary>
    public static bool ElectSignMass(IReadOnlyList<Tensor> stack, IReadOnlyList<Tensor> outputs) => ElectSignMass(stack, outputs, false);

    /// <summary>As <see cref="ElectSignMass(IReadOnlyList{Tensor}, IReadOnlyList{Tensor})"/>; a zero sum elects +1 when <paramref name="zeroIsPositive"/>.</summary>
    public static bool ElectSignMass(IReadOnlyList<Tensor> stack, IReadOnlyList<Tensor> outputs, bool zeroIsPositive)
    {
        var x = Pointers(stack);
        var o = Pointers(outputs);
        long n = stack[0].numel();
        int m = x.Length;
        int w = Vector<float>.Count;
        long j = 0;
        for (; j + w <= n; j += w)
        {
            Vector.Widen(*(Vector<float>*)(x[0] + j), out var sLo, out var sHi);
            for (int i = 1; i < m; i++)
            {
                Vector.Widen(*(Vector<float>*)(x[i] + j), out var lo, out var hi);
                sLo += lo;
                sHi += hi;
            }
            if (!Finite(sLo) || !Finite(sHi)) return false;
            var e = zeroIsPositive ? Vector.Narrow(NonNegativeSign(sLo), NonNegativeSign(sHi)) : Vector.Narrow(Sign(sLo), Sign(sHi));
            for (int i = 0; i < m; i++)
            {
                var v = *(Vector<float>*)(x[i] + j);
                var keep = Vector.AsVectorInt32(Vector.Equals(Sign(v), e));
                *(Vector<int>*)(o[i] + j) = Vector.AsVectorInt32(v) & keep;
            }
        }
        for (; j < n; j++)
        {
            double s = x[0][j];
            for (int i = 1; i < m; i++) s += x[i][j];
            if (!double.IsFinite(s)) return false;
            int e = zeroIsPositive && s == 0 ? 1 : Sign(s);
            for (int i = 0; i < m; i++)
            {
                float v = x[i][j];
                o[i][j] = Sign(v) == e ? v : 0f;
            }
        }
        return true;
    }

    /// <summary>
    /// Σ xᵢ / max(1, #{i : xᵢ ≠ 0}), the sum in float64 in stack order, rounded once to float32.
    /// False (output unspecified) when an input is not finite.
    /// </summary>
    public static bool DisjointMean(IReadOnlyList<Tensor> stack, Tensor output)
    {
        var x = Pointers(stack);
        var o = (float*)NativeTensors.DataPointer(output);
        long n = stack[0].numel();
        int m = x.Length;
        int w = Vector<float>.Count;
        long j = 0;
        var oneD = Vector<double>.One;
        for (; j + w <= n; j += w)
        {
            var v0 = *(Vector<float>*)(x[0] + j);
            Vector.Widen(v0, out var sLo, out var sHi);
            var count = NonZero(v0);
            for (int i = 1; i < m; i++)
            {
                var v = *(Vector<float>*)(x[i] + j);
                Vector.Widen(v, out var lo, out var hi);
                sLo += lo;
                sHi += hi;
                count += NonZero(v);
            }
            if (!Finite(sLo) || !Finite(sHi)) return false;
            Vector.Widen(count, out var cLo, out var cHi);
            *(Vector<float>*)(o + j) = Vector.Narrow(sLo / Vector.Max(cLo, oneD), sHi / Vector.Max(cHi, oneD));
        }
        for (; j < n; j++)
        {
            float v0 = x[0][j];
            double s = v0;
            double c = v0 != 0 ? 1 : 0;
            for (int i = 1; i < m; i++)
            {
                float v = x[i][j];
                s += v;
                if (v != 0) c += 1;
            }
            if (!double.IsFinite(s)) return false;
            o[j] = (float)(s / Math.Max(c, 1.0));
        }
        return true;
    }
}
