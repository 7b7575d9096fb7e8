using MergeDsl.Core.Ops;
using static TorchSharp.torch;

namespace MergeDsl.Core.Execution;

/// <summary>
/// The NaN/Inf checks of a merge. Every floating-point input tensor is checked as it is loaded, before
/// any op sees it, so no method can hide a bad input: breadcrumbs drops the largest magnitudes (and a
/// NaN ranks largest), DARE and DELLA drop entries at random, sign election zeroes entries, so their
/// outputs alone can look clean. Outputs are checked as well, for overflow the arithmetic itself produces.
/// </summary>
internal static class FiniteCheck
{
    /// <summary>Throws <see cref="NonFiniteTensorException"/> naming the input model when <paramref name="input"/> holds a NaN or ±Inf.</summary>
    public static void Input(Tensor input, string tensor, string model)
    {
        if (!IsFloating(input.dtype)) return;
        if (Locate(input) is { } bad) throw new NonFiniteTensorException(tensor, model, bad.Count, bad.First);
    }

    /// <summary>Throws <see cref="NonFiniteTensorException"/> for the merged tensor when <paramref name="result"/> holds a NaN or ±Inf.</summary>
    public static void Output(Tensor result, string tensor)
    {
        if (Locate(result) is { } bad) throw new NonFiniteTensorException(tensor, null, bad.Count, bad.First);
    }

    static bool IsFloating(ScalarType t) => t is ScalarType.Float32 or ScalarType.Float64 or ScalarType.Float16 or ScalarType.BFloat16;

    static (long Count, long First)? Locate(Tensor t)
    {
        using var scope = NewDisposeScope();
        // One vectorised read of the bits (or, where that does not apply, one float64 sum: NaN and ±Inf
        // propagate through it and finite float32/16 values cannot overflow it). Counting and locating
        // only run when that fails (a float64 sum of finite float64 values may overflow: the exact count
        // below then finds nothing).
        if (FiniteScan.AllFinite(t) is { } all ? all
            : t.numel() == 0 || double.IsFinite(t.sum(ScalarType.Float64).item<double>())) return null;
        var bad = t.isfinite().logical_not();
        long count = bad.sum().item<long>();
        if (count == 0) return null;
        return (count, bad.flatten().nonzero()[0, 0].item<long>());
    }
}
