using System.Numerics;
using MergeDsl.Core.Checkpoints;
using static TorchSharp.torch;

namespace MergeDsl.Core.Ops;

/// <summary>
/// Whether a contiguous CPU float tensor holds a NaN or ±Inf, by one vectorised read of its bits (an
/// all-ones exponent field), at memory bandwidth and without a temporary: a float64 sum or an
/// isfinite mask costs several times more on a large tensor.
/// </summary>
internal static unsafe class FiniteScan
{
    /// <summary>True/false when the scan applies (float32/64, float16, bfloat16 on CPU, contiguous); null otherwise.</summary>
    public static bool? AllFinite(Tensor t)
    {
        if (t.device_type != TorchSharp.DeviceType.CPU || !t.is_contiguous() || !NativeTensors.Available) return null;
        long n = t.numel();
        if (n == 0) return true;
        void* p = (void*)NativeTensors.DataPointer(t);
        return t.dtype switch
        {
            ScalarType.Float32 => !AnyExponentAllOnes((uint*)p, n, 0x7F80_0000u),
            ScalarType.Float64 => !AnyExponentAllOnes((ulong*)p, n, 0x7FF0_0000_0000_0000ul),
            ScalarType.Float16 => !AnyExponentAllOnes((ushort*)p, n, (ushort)0x7C00),
            ScalarType.BFloat16 => !AnyExponentAllOnes((ushort*)p, n, (ushort)0x7F80),
            _ => null,
        };
    }

    static bool AnyExponentAllOnes<T>(T* p, long n, T exponent) where T : unmanaged, IBinaryInteger<T>
    {
        long i = 0;
        int w = Vector<T>.Count;
        var mask = new Vector<T>(exponent);
        // Blocks of 64 K elements: one branch per block keeps the loop tight.
        const long Block = 1 << 16;
        for (; i + w <= n;)
        {
            long end = Math.Min(n - w, i + Block);
            var any = Vector<T>.Zero;
            for (; i <= end; i += w)
                any |= Vector.Equals(*(Vector<T>*)(p + i) & mask, mask);
            if (any != Vector<T>.Zero) return true;
        }
        for (; i < n; i++)
            if ((p[i] & exponent) == exponent) return true;
        return false;
    }
}
