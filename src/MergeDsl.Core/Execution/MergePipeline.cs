using System.Collections.Concurrent;
using System.Diagnostics;
using System.Runtime.ExceptionServices;
using MergeDsl.Core.Checkpoints;
using MergeDsl.Core.Compilation;
using static TorchSharp.torch;

namespace MergeDsl.Core.Execution;

/// <summary>
/// The merge phase of <see cref="Executor.Run"/>, one run of it: a reader thread loads the next tensors'
/// inputs within the prefetch budget, the calling thread evaluates each tensor's graph, a writer thread hands
/// results to the sink within the write budget. The first failure on any thread cancels the others and is
/// rethrown on the caller's.
/// </summary>
sealed class MergePipeline : IDisposable
{
    readonly MergePlan plan;
    readonly ITensorSink sink;
    readonly MergeOptions options;
    readonly IReadOnlyList<int> selected;
    readonly TensorPool pool;
    readonly GraphEvaluator evaluator;
    readonly ByteBudget prefetch;
    readonly ByteBudget pending;
    readonly CancellationTokenSource cts = new();
    readonly BlockingCollection<(int Index, Dictionary<int, Tensor> Loads)> toCompute = new();
    readonly BlockingCollection<(int Index, Tensor Result, long Bytes)> toWrite = new();
    readonly Stopwatch evaluating = new(), waiting = new(), finishing = new();
    ExceptionDispatchInfo? failure;
    readonly long bytesToWrite;
    long bytesWritten;
    int written;

    public MergePipeline(MergePlan plan, ITensorSink sink, MergeOptions options, IReadOnlyDictionary<(int Group, int Position), GlobalThreshold> thresholds,
        IReadOnlyList<int> selected, IReadOnlyDictionary<string, IReadOnlyDictionary<(int Group, int Position), long>>? tieStarts)
    {
        this.plan = plan;
        this.sink = sink;
        this.options = options;
        this.selected = selected;
        bytesToWrite = selected.Sum(i => plan.Tensors[i].OutputBytes);
        // Idle output buffers are bounded by what may wait for the writer anyway.
        pool = new TensorPool(options.MaxPendingWriteBytes);
        evaluator = new GraphEvaluator(options, thresholds, pool, tieStarts);
        prefetch = new ByteBudget(options.MaxPrefetchBytes);
        pending = new ByteBudget(options.MaxPendingWriteBytes);
    }

    /// <summary>Runs every tensor through the three stages; the times of the statistics phase are the caller's.</summary>
    public MergeStats Run()
    {
        var reader = new Thread(Read) { IsBackground = true, Name = "mergedsl-reader" };
        var writer = new Thread(Write) { IsBackground = true, Name = "mergedsl-writer" };
        reader.Start();
        writer.Start();
        try { Compute(); }
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
        if (written != selected.Count)
            throw new InvalidOperationException($"merge stopped after {written} of {selected.Count} tensors");
        return new MergeStats(written, plan.MergeBytesRead + plan.StatisticsBytesRead, bytesWritten, prefetch.Peak, TimeSpan.Zero, TimeSpan.Zero)
        {
            InputWaitTime = waiting.Elapsed,
            ComputeTime = evaluating.Elapsed,
            OutputTime = finishing.Elapsed,
        };
    }

    void Fail(Exception e)
    {
        Interlocked.CompareExchange(ref failure, ExceptionDispatchInfo.Capture(e), null);
        cts.Cancel();
    }

    /// <summary>Reader thread: loads each tensor's inputs in plan order, within the prefetch budget.</summary>
    void Read()
    {
        var ct = cts.Token;
        try
        {
            foreach (int i in selected)
            {
                if (ct.IsCancellationRequested) break;
                var t = plan.Tensors[i];
                prefetch.Acquire(t.InputBytes, ct);
                var loads = GlobalStatistics.LoadInputs(plan, t, [t.Output], options);
                toCompute.Add((i, loads), ct);
            }
        }
        catch (OperationCanceledException) { }
        catch (Exception e) { Fail(e); }
        finally { toCompute.CompleteAdding(); }
    }

    /// <summary>Calling thread: evaluates each tensor, checks and converts the result, queues it for the writer.</summary>
    void Compute()
    {
        var ct = cts.Token;
        waiting.Start();
        foreach (var (index, loads) in toCompute.GetConsumingEnumerable(ct))
        {
            waiting.Stop();
            var t = plan.Tensors[index];
            Tensor result;
            evaluating.Start();
            try { result = (Tensor)evaluator.Evaluate(t, loads, [t.Output])[0]; }
            finally { prefetch.Release(t.InputBytes); evaluating.Stop(); }
            finishing.Start();
            try
            {
                if (!t.IsCopy) result = Finish(t, result);
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
            finishing.Stop();
            waiting.Start();
        }
        waiting.Stop();
    }

    /// <summary>The finite check (unless allowed) and the conversion to the output dtype.</summary>
    Tensor Finish(TensorPlan t, Tensor result)
    {
        if (!options.AllowNonFinite) FiniteCheck.Output(result, t.Name);
        var type = DTypes.ToTorch(t.OutputDType);
        if (result.dtype == type) return result;
        var converted = result.to(type);
        pool.Return(result);
        return converted;
    }

    /// <summary>Writer thread: hands results to the sink in plan order, reporting progress.</summary>
    void Write()
    {
        var ct = cts.Token;
        try
        {
            foreach (var (index, result, bytes) in toWrite.GetConsumingEnumerable())
            {
                try
                {
                    if (ct.IsCancellationRequested) continue;
                    var t = plan.Tensors[index];
                    sink.Write(t.Name, result);
                    bytesWritten += t.OutputBytes;
                    written++;
                    options.Progress?.Invoke(new MergeProgress("merge", written, selected.Count, bytesWritten, bytesToWrite));
                }
                finally
                {
                    pool.Return(result);
                    pending.Release(bytes);
                }
            }
        }
        catch (Exception e) { Fail(e); }
    }

    public void Dispose()
    {
        toCompute.Dispose();
        toWrite.Dispose();
        cts.Dispose();
        pool.Dispose();
    }
}
