using System.Diagnostics;

namespace MergeDsl.Core.Benchmarks;

/// <summary>
/// Resident-memory figures of the current process. On Linux they come from <c>/proc/self/status</c>
/// (VmHWM is the kernel's own high-water mark of the resident set, so short peaks between samples are
/// not missed); elsewhere from <see cref="Process"/>, which is coarser.
/// </summary>
public static class PeakMemory
{
    /// <summary>Peak resident set size of this process so far, in bytes (VmHWM).</summary>
    public static long PeakResidentBytes() => ReadStatusKiB("VmHWM:") is long kib ? kib * 1024 : FallbackPeak();

    /// <summary>Current resident set size of this process, in bytes (VmRSS).</summary>
    public static long CurrentResidentBytes() => ReadStatusKiB("VmRSS:") is long kib ? kib * 1024 : FallbackCurrent();

    static long FallbackPeak() { using var p = Process.GetCurrentProcess(); return p.PeakWorkingSet64; }

    static long FallbackCurrent() { using var p = Process.GetCurrentProcess(); return p.WorkingSet64; }

    static long? ReadStatusKiB(string key)
    {
        const string status = "/proc/self/status";
        if (!File.Exists(status)) return null;
        foreach (string line in File.ReadLines(status))
        {
            if (!line.StartsWith(key, StringComparison.Ordinal)) continue;
            // "VmHWM:	  123456 kB"
            string[] parts = line[key.Length..].Split(' ', '\t', StringSplitOptions.RemoveEmptyEntries);
            if (parts.Length >= 1 && long.TryParse(parts[0], out long kib)) return kib;
        }
        return null;
    }
}
