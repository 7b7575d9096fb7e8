using System.Runtime.InteropServices;

namespace MergeDsl.Core.Execution;

/// <summary>
/// glibc serves every allocation above 32 MiB with a fresh mmap and unmaps it on free, so each
/// intermediate tensor of a large parameter costs a page fault per 4 KiB on first touch (measured:
/// about half of a task-arithmetic merge's CPU time was minor faults). Keeping large blocks in the
/// heap lets libtorch reuse the same pages tensor after tensor. Linux/glibc only; a no-op elsewhere.
/// </summary>
internal static class NativeHeap
{
    const int M_TRIM_THRESHOLD = -1;
    const int M_MMAP_MAX = -4;

    [DllImport("libc", EntryPoint = "mallopt")]
    static extern int Mallopt(int param, int value);

    static int applied;

    /// <summary>Applies the setting once per process.</summary>
    public static void KeepLargeBlocks()
    {
        if (!OperatingSystem.IsLinux() || Interlocked.Exchange(ref applied, 1) == 1) return;
        try
        {
            Mallopt(M_MMAP_MAX, 0);
            Mallopt(M_TRIM_THRESHOLD, 1 << 30);
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException) { }
    }
}
