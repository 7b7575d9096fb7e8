using System.Runtime.InteropServices;

namespace MergeDsl.Core.Models;

/// <summary>
/// glibc raises its mmap threshold each time a large block is freed, after which the per-batch
/// multi-megabyte tensors (e.g. WEMoE's per-sample merged weights) come from the heap and RSS creeps up
/// over thousands of batches (measured: +330 MB over 1000 batches, flat with a fixed threshold). Fixing the
/// threshold keeps long inference and adaptation runs flat. Process-wide; a no-op off glibc.
/// </summary>
public static class NativeAllocator
{
    const int M_MMAP_THRESHOLD = -3;

    [DllImport("libc", EntryPoint = "mallopt")]
    static extern int Mallopt(int param, int value);

    /// <summary>Serves blocks of at least <paramref name="bytes"/> with mmap (returned to the OS on free). True when applied.</summary>
    public static bool UseMmapForLargeBlocks(int bytes = 128 * 1024)
    {
        if (!OperatingSystem.IsLinux()) return false;
        try { return Mallopt(M_MMAP_THRESHOLD, bytes) == 1; }
        catch (DllNotFoundException) { return false; }
        catch (EntryPointNotFoundException) { return false; }
    }
}
