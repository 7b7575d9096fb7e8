using System.Diagnostics;

namespace MergeDsl.Core.Memory;

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

    /// <summary>Anonymous (heap, tensors) resident bytes now (RssAnon); -1 where unknown.</summary>
    public static long CurrentAnonymousBytes() => (ReadStatusKiB("RssAnon:") ?? -1) * 1024 is var b && b >= 0 ? b : -1;

    /// <summary>File-backed resident bytes now (RssFile: mapped checkpoint pages, libraries); -1 where unknown.</summary>
    public static long CurrentFileBackedBytes() => (ReadStatusKiB("RssFile:") ?? -1) * 1024 is var b && b >= 0 ? b : -1;

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
            string[] parts = line[key.Length..].Split([' ', '\t'], StringSplitOptions.RemoveEmptyEntries);
            if (parts.Length >= 1 && long.TryParse(parts[0], out long kib)) return kib;
        }
        return null;
    }
}

/// <summary>
/// Samples the split of the resident set in the background. VmHWM counts file-backed pages of
/// memory-mapped inputs too, which the kernel can drop at will; the anonymous peak is the memory a
/// merge really needs. The kernel keeps no high-water mark per kind, so it is sampled.
/// </summary>
public sealed class ResidentSampler : IDisposable
{
    readonly Timer _timer;
    long _peakAnon = -1, _peakFile = -1;

    /// <summary>Starts sampling every <paramref name="periodMs"/> milliseconds.</summary>
    public ResidentSampler(int periodMs = 20)
    {
        _timer = new Timer(_ => Sample(), null, 0, periodMs);
    }

    void Sample()
    {
        long a = PeakMemory.CurrentAnonymousBytes(), f = PeakMemory.CurrentFileBackedBytes();
        if (a > Interlocked.Read(ref _peakAnon)) Interlocked.Exchange(ref _peakAnon, a);
        if (f > Interlocked.Read(ref _peakFile)) Interlocked.Exchange(ref _peakFile, f);
    }

    /// <summary>Largest anonymous resident set seen so far (bytes).</summary>
    public long PeakAnonymousBytes { get { Sample(); return Interlocked.Read(ref _peakAnon); } }

    /// <summary>Largest file-backed resident set seen so far (bytes).</summary>
    public long PeakFileBackedBytes { get { Sample(); return Interlocked.Read(ref _peakFile); } }

    /// <summary>Stops sampling.</summary>
    public void Dispose() => _timer.Dispose();
}
