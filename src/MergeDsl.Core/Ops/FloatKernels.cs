using System.Numerics;
using MergeDsl.Core.Checkpoints;
using static TorchSharp.torch;

namespace MergeDsl.Core.Ops;

/// <summary>Elementwise float32 kernels that write into a given buffer (TorchSharp 0.107 has no out= variants).</summary>
internal static unsafe class FloatKernels
{
    /// <summary>True when a and b are contiguous float32 CPU tensors of the same shape.</summary>
    public static bool Applies(Tensor a, Tensor b) =>
        NativeTensors.Available && a.dtype == ScalarType.Float32 && b.dtype == ScalarType.Float32
        && a.device_type == TorchSharp.DeviceType.CPU && b.device_type == TorchSharp.DeviceType.CPU
        && a.is_contiguous() && b.is_contiguous() && a.shape.SequenceEqual(b.shape);

    /// <summary>
    /// destination = a − b, one IEEE float32 subtraction per element: the same result as torch's sub
    /// (which computes a + (−1)·b with one rounding).
    /// </summary>
    public static void Sub(Tensor a, Tensor b, Tensor destination)
    {
        var pa = (float*)NativeTensors.DataPointer(a);
        var pb = (float*)NativeTensors.DataPointer(b);
        var pd = (float*)NativeTensors.DataPointer(destination);
        long n = a.numel();
        int w = Vector<float>.Count;
        long j = 0;
        for (; j + w <= n; j += w)
            *(Vector<float>*)(pd + j) = *(Vector<float>*)(pa + j) - *(Vector<float>*)(pb + j);
        for (; j < n; j++) pd[j] = pa[j] - pb[j];
    }
}
