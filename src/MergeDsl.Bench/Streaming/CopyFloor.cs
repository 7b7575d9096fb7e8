using System.Diagnostics;

namespace MergeDsl.Bench.Streaming;

/// <summary>What one run of the copy floor did.</summary>
/// <param name="BytesRead">Every byte of every input file, read once.</param>
/// <param name="BytesWritten">The size of one model, written once.</param>
/// <param name="Seconds">Wall time of the whole copy.</param>
public sealed record CopyFloorResult(long BytesRead, long BytesWritten, double Seconds);

/// <summary>
/// The lower bound of a streaming merge: read every input byte once and write one model's worth of
/// bytes once, with plain sequential buffered I/O and no arithmetic. A merge cannot do less I/O, so
/// its wall time over this one is the price of everything else (decoding, math, scheduling).
/// </summary>
public static class CopyFloor
{
    const int BufferBytes = 16 << 20;

    /// <summary>
    /// Reads every file in <paramref name="inputFiles"/> front to back; the first file's bytes are also
    /// written to <paramref name="outputFile"/> (so the output has exactly one model's size and the
    /// same layout a merge would produce). Like the checkpoint writer's commit, the output is forced to
    /// disk (fsync) before the clock stops.
    /// </summary>
    public static CopyFloorResult Run(IReadOnlyList<string> inputFiles, string outputFile)
    {
        if (inputFiles.Count == 0) throw new ArgumentException("copy floor: no input files");
        var buffer = new byte[BufferBytes];
        long read = 0, written = 0;
        var clock = Stopwatch.StartNew();
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(outputFile))!);
        using (var output = new FileStream(outputFile, FileMode.Create, FileAccess.Write, FileShare.None, 1, FileOptions.None))
        {
            for (int i = 0; i < inputFiles.Count; i++)
            {
                using var input = new FileStream(inputFiles[i], FileMode.Open, FileAccess.Read, FileShare.Read, 1, FileOptions.SequentialScan);
                int n;
                while ((n = input.Read(buffer, 0, buffer.Length)) > 0)
                {
                    read += n;
                    if (i == 0) { output.Write(buffer, 0, n); written += n; }
                }
            }
            // The checkpoint writer forces its shards to disk before the atomic rename; so does the floor.
            output.Flush(flushToDisk: true);
        }
        clock.Stop();
        return new CopyFloorResult(read, written, clock.Elapsed.TotalSeconds);
    }
}
