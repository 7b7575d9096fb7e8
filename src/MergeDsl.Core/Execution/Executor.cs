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

    /// <summary>Runs the statistics phase (if the plan has global top-k) and the merge phase.</summary>
    public static MergeStats Run(MergePlan plan, ITensorSink sink, MergeOptions? options = null)
    {
        options ??= MergeOptions.Default;
        if (options.ReuseNativeMemory) NativeHeap.Apply(NativeHeapPolicy.KeepLargeBlocks);
        var clock = Stopwatch.StartNew();
        var thresholds = plan.Groups.Count > 0
            ? GlobalStatistics.Compute(plan, options)
            : new Dictionary<(int Group, int Position), GlobalThreshold>();
        var statsTime = clock.Elapsed;
        clock.Restart();

        // Idle output buffers are bounded by what may wait for the writer anyway.
        using var pool = new TensorPool(options.MaxPendingWriteBytes);
        var evaluator = new GraphEvaluator(options, thresholds, pool);
        var prefetch = new ByteBudget(options.MaxPrefetchBytes);
        var pending = new ByteBudget(options.MaxPendingWriteBytes);
        using var cts = new CancellationTokenSource();
        var ct = cts.Token;
        using var toCompute = new BlockingCollection<(int Index, Dictionary<int, Tensor> Loads)>();
        using var toWrite = new BlockingCollection<(int Index, Tensor Result, long Bytes)>();
        ExceptionDispatchInfo? failure = null;
        void Fail(Exception e)
        {
            Interlocked.CompareExchange(ref failure, ExceptionDispatchInfo.Capture(e), null);
            cts.Cancel();
        }

        long bytesWritten = 0;
        int written = 0;
        long totalOut = plan.BytesWritten;

        var reader = new Thread(() =>
        {
            try
            {
                for (int i = 0; i < plan.Tensors.Count && !ct.IsCancellationRequested; i++)
                {
                    var t = plan.Tensors[i];
                    prefetch.Acquire(t.InputBytes, ct);
                    var loads = GlobalStatistics.LoadInputs(plan, t, [t.Output], options);
                    toCompute.Add((i, loads), ct);
                }
            }
            catch (OperationCanceledException) { }
            catch (Exception e) { Fail(e); }
            finally { toCompute.CompleteAdding(); }
        }) { IsBackground = true, Name = "mergedsl-reader" };

        var writer = new Thread(() =>
        {
            try
            {
                foreach (var (index, result, bytes) in toWrite.GetConsumingEnumerable())
                {
                    try
                    {
                        if (!ct.IsCancellationRequested)
                        {
                            var t = plan.Tensors[index];
                            sink.Write(t.Name, result);
                            bytesWritten += t.OutputBytes;
                            written++;
                            options.Progress?.Invoke(new MergeProgress("merge", written, plan.Tensors.Count, bytesWritten, totalOut));
                        }
                    }
                    finally
                    {
                        pool.Return(result);
                        pending.Release(bytes);
                    }
                }
            }
            catch (Exception e) { Fail(e); }
        }) { IsBackground = true, Name = "mergedsl-writer" };

        var tEval = new Stopwatch(); var tWait = new Stopwatch(); var tPost = new Stopwatch();
        reader.Start();
        writer.Start();
        try
        {
            tWait.Start();
            foreach (var (index, loads) in toCompute.GetConsumingEnumerable(ct))
            {
                tWait.Stop();
                var t = plan.Tensors[index];
                Tensor result;
                tEval.Start();
                try
                {
                    result = (Tensor)evaluator.Evaluate(t, loads, [t.Output])[0];
                }
                finally { prefetch.Release(t.InputBytes); tEval.Stop(); }
                tPost.Start();
                try
                {
                    if (!t.IsCopy)
                    {
                        if (!options.AllowNonFinite) FiniteCheck.Output(result, t.Name);
                        var type = DTypes.ToTorch(t.OutputDType);
                        if (result.dtype != type)
                        {
                            var converted = result.to(type);
                            pool.Return(result);
                            result = converted;
                        }
                    }
                    pending.Acquire(t.OutputBytes, ct);
                }
                catch
                {
                    pool.Return(result);
                    throw;
                }
                // The writer thread disposes it: it must not belong to a dispose scope of this thread
                // (a cross-thread disposal mutates the scope's set concurrently with this thread).
                result.DetachFromDisposeScope();
                toWrite.Add((index, result, t.OutputBytes), ct);
                tPost.Stop();
                tWait.Start();
            }
            tWait.Stop();
        }
        catch (OperationCanceledException) { }
        catch (Exception e) { Fail(e); }
        finally
        {
            toWrite.CompleteAdding();
            if (failure is not null) cts.Cancel();
            reader.Join();
            writer.Join();
            // Inputs the reader loaded but nobody computed.
            while (toCompute.TryTake(out var left))
                foreach (var l in left.Loads.Values) l.Dispose();
        }
        failure?.Throw();
        if (written != plan.Tensors.Count)
            throw new InvalidOperationException($"merge stopped after {written} of {plan.Tensors.Count} tensors");
        // An input rewritten during the run may have been read half old, half new: fail before the caller commits.
        foreach (var m in plan.Models)
            if (m.Source is Checkpoint cp) cp.EnsureUnchanged();
        long read = plan.MergeBytesRead + plan.StatisticsBytesRead;
        return new MergeStats(written, read, bytesWritten, prefetch.Peak, statsTime, clock.Elapsed)
        {
            InputWaitTime = tWait.Elapsed,
            ComputeTime = tEval.Elapsed,
            OutputTime = tPost.Elapsed,
        };
    }
}
