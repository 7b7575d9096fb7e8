using MergeDsl.Core.Checkpoints;
using static TorchSharp.torch;

namespace MergeDsl.Core.Ops;

/// <summary>
/// Exact top-k by magnitude of a contiguous float32 CPU tensor in three streaming passes and no
/// scratch tensor: |x| with the sign bit cleared is a non-negative float whose IEEE-754 bit pattern,
/// read as an unsigned integer, orders like the value (NaN patterns above +Inf, so NaN ranks largest,
/// as in the descending sort). A radix select over the high then the low 16 bits finds the bit pattern
/// T of the k-th largest magnitude; entries above T are kept, and of those equal to T the lowest flat
/// indices until k are kept — the order of <see cref="MergeOps.DescendingOrder"/>.
/// </summary>
internal static unsafe class MagnitudeSelect
{
    const uint Magnitude = 0x7FFF_FFFF;
    const uint PositiveInfinity = 0x7F80_0000;

    /// <summary>True when <paramref name="x"/> can take this path.</summary>
    public static bool Applies(Tensor x) =>
        x.dtype == ScalarType.Float32 && x.device_type == TorchSharp.DeviceType.CPU && x.is_contiguous() && NativeTensors.Available;

    /// <summary>
    /// Keeps the k = <paramref name="k"/> largest |x| of <paramref name="source"/> and writes +0 elsewhere,
    /// into <paramref name="destination"/> (same shape; may be the source itself). Returns false, writing
    /// nothing, when the k-th largest magnitude is a NaN (the caller then uses the sort-based path).
    /// </summary>
    public static bool Apply(Tensor source, Tensor destination, long k)
    {
        long n = source.numel();
        var src = (uint*)NativeTensors.DataPointer(source);
        var dst = (uint*)NativeTensors.DataPointer(destination);
        if (k >= n)
        {
            if (src != dst) Buffer.MemoryCopy(src, dst, n * 4, n * 4);
            return true;
        }
        if (k <= 0)
        {
            for (long i = 0; i < n; i++) dst[i] = 0;
            return true;
        }
        var hist = new long[1 << 16];
        for (long i = 0; i < n; i++) hist[(src[i] & Magnitude) >> 16]++;
        long above = 0;
        uint high = 0xFFFF;
        while (above + hist[high] < k) above += hist[high--];
        Array.Clear(hist);
        for (long i = 0; i < n; i++)
        {
            uint u = src[i] & Magnitude;
            if (u >> 16 == high) hist[u & 0xFFFF]++;
        }
        uint low = 0xFFFF;
        while (above + hist[low] < k) above += hist[low--];
        uint t = high << 16 | low;
        if (t > PositiveInfinity) return false;
        long ties = k - above; // entries equal to t that are kept, by ascending flat index
        for (long i = 0; i < n; i++)
        {
            uint v = src[i];
            uint u = v & Magnitude;
            dst[i] = u > t || (u == t && ties-- > 0) ? v : 0u;
        }
        return true;
    }
}
