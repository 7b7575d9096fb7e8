using System.Numerics;
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
        // int counters (256 KiB, cache-resident) when no bin can overflow them.
        if (n < int.MaxValue) return Select(src, dst, n, k, new int[1 << 16]);
        return Select(src, dst, n, k, new long[1 << 16]);
    }

    static bool Select<C>(uint* src, uint* dst, long n, long k, C[] hist) where C : unmanaged, IBinaryInteger<C>
    {
        for (long i = 0; i < n; i++) hist[(src[i] & Magnitude) >> 16]++;
        long above = 0;
        uint high = 0xFFFF;
        while (above + long.CreateTruncating(hist[high]) < k) above += long.CreateTruncating(hist[high--]);
        Array.Clear(hist);
        // Second pass: only the entries of bin `high` count; whole vectors without one are skipped.
        int w = Vector<uint>.Count;
        var magnitude = new Vector<uint>(Magnitude);
        var highV = new Vector<uint>(high);
        long j = 0;
        for (; j + w <= n; j += w)
        {
            var u = *(Vector<uint>*)(src + j) & magnitude;
            if (!Vector.EqualsAny(Vector.ShiftRightLogical(u, 16), highV)) continue;
            for (long i = j; i < j + w; i++)
            {
                uint x = src[i] & Magnitude;
                if (x >> 16 == high) hist[x & 0xFFFF]++;
            }
        }
        for (; j < n; j++)
        {
            uint x = src[j] & Magnitude;
            if (x >> 16 == high) hist[x & 0xFFFF]++;
        }
        uint low = 0xFFFF;
        while (above + long.CreateTruncating(hist[low]) < k) above += long.CreateTruncating(hist[low--]);
        uint t = high << 16 | low;
        if (t > PositiveInfinity) return false;
        long ties = k - above; // entries equal to t that are kept, by ascending flat index
        // Third pass: keep u > t vector-wise; vectors holding an entry equal to t go element by element
        // so that the ties are taken in index order.
        var tV = new Vector<uint>(t);
        j = 0;
        for (; j + w <= n; j += w)
        {
            var v = *(Vector<uint>*)(src + j);
            var u = v & magnitude;
            if (Vector.EqualsAny(u, tV))
            {
                for (long i = j; i < j + w; i++)
                {
                    uint x = src[i] & Magnitude;
                    dst[i] = x > t || (x == t && ties-- > 0) ? src[i] : 0u;
                }
            }
            else
            {
                *(Vector<uint>*)(dst + j) = v & Vector.GreaterThan(u, tV);
            }
        }
        for (; j < n; j++)
        {
            uint x = src[j] & Magnitude;
            dst[j] = x > t || (x == t && ties-- > 0) ? src[j] : 0u;
        }
        return true;
    }
}
