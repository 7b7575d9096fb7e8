using System.Runtime.InteropServices;

namespace MergeDsl.Core.Memory;

/// <summary>How glibc's allocator should treat the large blocks that tensors live in.</summary>
public enum NativeHeapPolicy
{
    /// <summary>
    /// For streaming merges. glibc serves every allocation above 32 MiB with a fresh mmap and unmaps
    /// it on free, so each intermediate tensor of a large parameter costs a page fault per 4 KiB on
    /// first touch (measured: about half of a task-arithmetic merge's CPU time was minor faults).
    /// Keeping large blocks in the heap lets libtorch reuse the same pages tensor after tensor.
    /// </summary>
    KeepLargeBlocks,

    /// <summary>
    /// For long inference and adaptation runs. glibc raises its mmap threshold each time a large block
    /// is freed, after which per-batch multi-megabyte tensors (e.g. WEMoE's per-sample merged weights)
    /// come from the heap and RSS creeps up over thousands of batches (measured: +330 MB over 1000
    /// batches, flat with a fixed threshold). Serving blocks of 128 KiB and more with mmap keeps RSS flat.
    /// </summary>
    MapLargeBlocks,
}

/// <summary>
/// The process-wide glibc allocator settings (<c>mallopt</c>) behind <see cref="NativeHeapPolicy"/>.
/// Linux/glibc only; a no-op elsewhere. The setting is the process's: the last policy applied wins.
/// </summary>
public static class NativeHeap
{
    const int M_TRIM_THRESHOLD = -1;
    const int M_MMAP_THRESHOLD = -3;
    const int M_MMAP_MAX = -4;
    const int LargeBlockBytes = 128 * 1024;

    [DllImport("libc", EntryPoint = "mallopt")]
    static extern int Mallopt(int param, int value);

    /// <summary>Applies <paramref name="policy"/>; true when glibc accepted it.</summary>
    public static bool Apply(NativeHeapPolicy policy)
    {
        if (!OperatingSystem.IsLinux()) return false;
        try
        {
            return policy switch
            {
                NativeHeapPolicy.KeepLargeBlocks => Mallopt(M_MMAP_MAX, 0) == 1 & Mallopt(M_TRIM_THRESHOLD, 1 << 30) == 1,
                NativeHeapPolicy.MapLargeBlocks => Mallopt(M_MMAP_MAX, 65536) == 1 & Mallopt(M_MMAP_THRESHOLD, LargeBlockBytes) == 1,
                _ => throw new ArgumentOutOfRangeException(nameof(policy), policy, "unknown native heap policy"),
            };
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            return false;
        }
    }
}
