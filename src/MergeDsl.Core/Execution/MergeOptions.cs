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

    /// <summary>When false (default) a NaN or Inf in a merged tensor stops the merge with an error naming the parameter.</summary>
    public bool AllowNonFinite { get; init; }

    /// <summary>Bytes of inputs the reader may hold ahead of the computation (prefetch budget).</summary>
    public long MaxPrefetchBytes { get; init; } = 1L << 30;

    /// <summary>Bytes of results waiting for the writer.</summary>
    public long MaxPendingWriteBytes { get; init; } = 1L << 30;

    /// <summary>Called after each tensor (from the writer or statistics thread).</summary>
    public Action<MergeProgress>? Progress { get; init; }

    /// <summary>Defaults: CPU, float32, seed 0.</summary>
    public static MergeOptions Default { get; } = new();
}
