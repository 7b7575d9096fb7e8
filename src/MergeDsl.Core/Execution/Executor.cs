using System.Collections.Concurrent;
using System.Diagnostics;
using System.Runtime.ExceptionServices;
using MergeDsl.Core.Checkpoints;
using MergeDsl.Core.Compilation;
using MergeDsl.Core.Ir;
using MergeDsl.Core.Memory;
using MergeDsl.Core.Ops;
using TorchSharp;
using static TorchSharp.torch;

namespace MergeDsl.Core.Execution;

/// <summary>What a run did.</summary>
/// <param name="Tensors">Tensors written.</param>
/// <param name="BytesRead">Bytes loaded from the inputs (all passes).</param>
/// <param name="BytesWritten">Bytes handed to the sink (in output dtypes).</param>
/// <param name="PeakPrefetchBytes">Most input bytes held ahead of the computation at once.</param>
/// <param name="StatisticsTime">Time in the statistics phase.</param>
/// <param name="MergeTime">Time in the merge phase.</param>
public sealed record MergeStats(int Tensors, long BytesRead, long BytesWritten, long PeakPrefetchBytes, TimeSpan StatisticsTime, TimeSpan MergeTime)
{
    /// <summary>Time the compute thread waited for the reader (I/O bound when large).</summary>
    public TimeSpan InputWaitTime { get; init; }
    /// <summary>Time spent evaluating graphs.</summary>
    public TimeSpan ComputeTime { get; init; }
    /// <summary>Time in the finite check, output conversion and waiting for the writer queue.</summary>
    public TimeSpan OutputTime { get; init; }
    /// <summary>Output tensors of the plan this run did not compute (another part's, or already written by a resumed run).</summary>
    public int TensorsSkipped { get; init; }
}

/// <summary>
/// Runs a plan as a bounded pipeline: a reader thread loads (and moves to the device) the next
/// tensors' inputs within a byte budget while the calling thread computes the current one; a writer
/// thread hands results to the sink. Every value is disposed after its last use.
/// </summary>
public static class Executor
{
    /// <summary>Loads a tensor and moves it to the options' device.</summary>
    internal static Tensor LoadOnDevice(ITensorSource source, string name, MergeOptions options)
    {
        var t = source.Load(name);
        // Also before a copy to another device: that copy reads the mapped pages too.
        if (!Prefault(t))
        {
            t.Dispose();
            source.TryGetInfo(name, out var info);
            throw info is not null
                ? Checkpoint.TruncatedWhileReading(info)
                : new IOException($"{source.Label}: tensor '{name}' can no longer be read (its file was truncated while being read)");
        }
        if (options.Device is null || options.Device.type == DeviceType.CPU) return t;
        try { return t.to(options.Device); }
        finally { t.Dispose(); }
    }

    /// <summary>
    /// Pages a memory-mapped (zero-copy) CPU input in on the reader thread, in parallel with the
    /// computation, instead of faulting in the compute thread: one madvise(MADV_POPULATE_READ) maps the
    /// whole range (one fault per 4 KiB otherwise); where that is unavailable, touches one byte per page.
    /// False when a page cannot be read (the file was truncated after it was opened): touching it would
    /// raise SIGBUS and kill the process.
    /// </summary>
    static unsafe bool Prefault(Tensor t)
    {
        if (!NativeTensors.Available || !t.is_contiguous() || t.numel() == 0) return true;
        byte* p = (byte*)NativeTensors.DataPointer(t);
        long bytes = t.numel() * t.element_size();
        switch (NativeTensors.Populate((IntPtr)p, bytes))
        {
            case NativeTensors.PageIn.Done: return true;
            case NativeTensors.PageIn.Unreadable: return false;
        }
        int sum = 0;
        for (long off = 0; off < bytes; off += 4096) sum += Volatile.Read(ref p[off]);
        GC.KeepAlive(sum);
        return true;
    }

    /// <summary>
    /// Runs the tensors of <paramref name="scope"/> (all when null): the statistics phase if the plan has global top-k
    /// (unless the scope brings its statistics), then the merge phase over those tensors, in plan order.
    /// </summary>
    public static MergeStats Run(MergePlan plan, ITensorSink sink, MergeOptions? options = null, ExecutionScope? scope = null)
    {
        options ??= MergeOptions.Default;
        if (options.ReuseNativeMemory) NativeHeap.Apply(NativeHeapPolicy.KeepLargeBlocks);
        var selected = Enumerable.Range(0, plan.Tensors.Count).Where(i => scope is null || scope.Tensors.Contains(plan.Tensors[i].Name)).ToList();
        var clock = Stopwatch.StartNew();
        IReadOnlyDictionary<(int Group, int Position), GlobalThreshold> thresholds = new Dictionary<(int Group, int Position), GlobalThreshold>();
        IReadOnlyDictionary<string, IReadOnlyDictionary<(int Group, int Position), long>>? tieStarts = null;
        long statisticsRead = 0;
        if (plan.Groups.Count > 0 && selected.Count > 0)
        {
            if (scope?.Statistics is { } given) (thresholds, tieStarts) = (given.ThresholdMap(), given.TieStartMap());
            else if (selected.Count == plan.Tensors.Count)
            {
                thresholds = GlobalStatistics.Compute(plan, options);
                statisticsRead = plan.StatisticsBytesRead;
            }
            else
            {
                var computed = PlanStatistics.Compute(plan, options, "");
                (thresholds, tieStarts, statisticsRead) = (computed.ThresholdMap(), computed.TieStartMap(), computed.BytesRead);
            }
        }
        var statsTime = clock.Elapsed;
        clock.Restart();
        using var pipeline = new MergePipeline(plan, sink, options, thresholds, selected, tieStarts);
        var stats = pipeline.Run() with { BytesRead = selected.Sum(i => plan.Tensors[i].InputBytes) + statisticsRead, TensorsSkipped = plan.Tensors.Count - selected.Count };
        // An input rewritten during the run may have been read half old, half new: fail before the caller commits.
        foreach (var m in plan.Models)
        {
            if (m.Source is Checkpoint cp) cp.EnsureUnchanged();
            if (m.Source is ICheckpointBacked backed)
                foreach (var c in backed.Checkpoints) c.EnsureUnchanged();
        }
        return stats with { StatisticsTime = statsTime, MergeTime = clock.Elapsed };
    }
}
