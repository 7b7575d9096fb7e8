using TorchSharp;
using static TorchSharp.torch;

namespace MergeDsl.Core.Torch;

/// <summary>
/// Tensor operations with a number operand whose native <see cref="Scalar"/> is created explicitly,
/// kept alive across the native call and disposed afterwards. TorchSharp's implicit double/long/bool →
/// Scalar conversions (and the hidden alpha = 1 of <c>add(Tensor)</c> / <c>operator +</c>) make a
/// temporary that only the native call references: the GC may finalize (free) it while libtorch still
/// reads it ("alpha must not be a floating point number", "toDouble", NullReference). Each method calls
/// exactly the TorchSharp overload the implicit form would have called, so results are bit-identical.
/// </summary>
internal static class ScalarArgs
{
    /// <summary>a + b (alpha 1, as <c>operator +</c>).</summary>
    public static Tensor Plus(this Tensor a, Tensor b)
    {
        using var one = 1.ToScalar();
        return a.add(b, one);
    }

    /// <summary>x + v (alpha 1, as <c>operator +(Tensor, double)</c>).</summary>
    public static Tensor Plus(this Tensor x, double v)
    {
        using var s = v.ToScalar();
        using var one = 1.ToScalar();
        return x.add(s, one);
    }

    /// <summary>x + v for an integer v (keeps integer tensors integral).</summary>
    public static Tensor Plus(this Tensor x, long v)
    {
        using var s = v.ToScalar();
        using var one = 1.ToScalar();
        return x.add(s, one);
    }

    /// <summary>x · v.</summary>
    public static Tensor Times(this Tensor x, double v)
    {
        using var s = v.ToScalar();
        return x.mul(s);
    }

    /// <summary>x / v.</summary>
    public static Tensor Over(this Tensor x, double v)
    {
        using var s = v.ToScalar();
        return x.div(s);
    }

    /// <summary>x / v with the given rounding (integer division when truncating integer tensors).</summary>
    public static Tensor Over(this Tensor x, long v, RoundingMode rounding)
    {
        using var s = v.ToScalar();
        return x.div(s, rounding);
    }

    /// <summary>x mod v.</summary>
    public static Tensor Mod(this Tensor x, long v)
    {
        using var s = v.ToScalar();
        return x.remainder(s);
    }

    /// <summary>x == v, elementwise.</summary>
    public static Tensor EqualTo(this Tensor x, long v)
    {
        using var s = v.ToScalar();
        return x.eq(s);
    }

    /// <summary>x^v.</summary>
    public static Tensor Power(this Tensor x, long v)
    {
        using var s = v.ToScalar();
        return x.pow(s);
    }

    /// <summary>x clamped to [lo, hi].</summary>
    public static Tensor ClampTo(this Tensor x, double lo, double hi)
    {
        using var l = lo.ToScalar();
        using var h = hi.ToScalar();
        return x.clamp(l, h);
    }

    /// <summary>Fills x with v in place.</summary>
    public static Tensor FillWith(this Tensor x, double v)
    {
        using var s = v.ToScalar();
        return x.fill_(s);
    }

    /// <summary>Sets x[index] = true along <paramref name="dim"/>, in place (boolean masks).</summary>
    public static Tensor SetTrue(this Tensor x, long dim, Tensor index)
    {
        using var s = true.ToScalar();
        return x.index_fill_(dim, index, s);
    }

    /// <summary>A tensor of the given shape filled with v.</summary>
    public static Tensor Full(long[] shape, double v, ScalarType dtype, Device? device = null)
    {
        using var s = v.ToScalar();
        return torch.full(shape, s, dtype: dtype, device: device);
    }

    /// <summary>A tensor shaped like x filled with v.</summary>
    public static Tensor FullLike(Tensor x, double v, ScalarType dtype)
    {
        using var s = v.ToScalar();
        return full_like(x, s, dtype: dtype);
    }

    /// <summary>x &lt; v, elementwise.</summary>
    public static Tensor Below(this Tensor x, double v)
    {
        using var s = v.ToScalar();
        return x.lt(s);
    }

    /// <summary>0, 1, …, stop − 1 (the overload <c>arange(stop)</c> forwards to, with its Scalars held here).</summary>
    public static Tensor Range(long stop, ScalarType dtype, Device? device = null)
    {
        using var start = 0L.ToScalar();
        using var end = stop.ToScalar();
        using var step = 1L.ToScalar();
        return arange(start, end, step, dtype, device);
    }
}
