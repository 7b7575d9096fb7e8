using MergeDsl.Core.Ops;
using TorchSharp;

namespace MergeDsl.Core.Execution;

/// <summary>Progress of a merge.</summary>
/// <param name="Phase">"statistics" or "merge".</param>
/// <param name="TensorsDone">Tensors finished in this phase.</param>
/// <param name="TensorsTotal">Tensors in this phase.</param>
/// <param name="BytesDone">Bytes written (merge) or read (statistics) so far.</param>
/// <param name="BytesTotal">Bytes to write (merge) or read (statistics).</param>
public sealed record MergeProgress(string Phase, int TensorsDone, int TensorsTotal, long BytesDone, long BytesTotal);

/// <summary>How a plan is executed.</summary>
public sealed record MergeOptions
{
    /// <summary>Where the arithmetic runs (CPU when null). Inputs are read on the CPU and moved there.</summary>
    public torch.Device? Device { get; init; }

    /// <summary>Dtype of the arithmetic; float32 by default. Null keeps each tensor's stored dtype (e.g. bf16).</summary>
    public torch.ScalarType? ComputeDType { get; init; } = torch.ScalarType.Float32;

    /// <summary>Seed of DARE and DELLA masks (combined with each parameter name, see <see cref="Seeding"/>).</summary>
    public long Seed { get; init; }

    /// <summary>Noise behind random masks; the seeded default unless a test fixes it.</summary>
    public NoiseSource Noise { get; init; } = SeededNoise.Default;

    /// <summary>
    /// When false (default) a NaN or Inf in any floating-point input tensor, or in a merged tensor, stops the
    /// merge with a <see cref="NonFiniteTensorException"/> naming the parameter (and the input model). When true neither is checked.
    /// </summary>
    public bool AllowNonFinite { get; init; }

    /// <summary>Bytes of inputs the reader may hold ahead of the computation (prefetch budget).</summary>
    public long MaxPrefetchBytes { get; init; } = 512L << 20;

    /// <summary>Bytes of results waiting for the writer.</summary>
    public long MaxPendingWriteBytes { get; init; } = 512L << 20;

    /// <summary>
    /// Keep freed large native blocks for reuse instead of returning them to the OS (glibc mallopt;
    /// process-wide, Linux only). Saves a page fault per 4 KiB of every intermediate tensor
    /// (task arithmetic, 3×400 MB f32: minor faults 1.25 M → 0.32 M, system time 3.3 s → 2.1 s) at the
    /// price of a higher resident peak (1.97 → 2.53 GB), hence off by default.
    /// </summary>
    public bool ReuseNativeMemory { get; init; }

    /// <summary>Called after each tensor (from the writer or statistics thread).</summary>
    public Action<MergeProgress>? Progress { get; init; }

    /// <summary>Defaults: CPU, float32, seed 0.</summary>
    public static MergeOptions Default { get; } = new();
}
