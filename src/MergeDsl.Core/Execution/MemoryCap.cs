using MergeDsl.Core.Checkpoints;
using MergeDsl.Core.Compilation;

namespace MergeDsl.Core.Execution;

/// <summary>
/// Fits the executor's budgets under a memory cap: the compute thread holds one tensor's working set (its inputs and
/// float32 intermediates), the reader at least one tensor's inputs ahead and the writer at least one result; what is
/// left of the cap is split between the prefetch and write budgets (each at most its default). Memory-mapped input
/// pages are the kernel's page cache, reclaimable, and are not counted.
/// </summary>
public static class MemoryCap
{
    /// <summary>The least cap <paramref name="plan"/> can run under, and the tensor that needs it.</summary>
    public static (long Bytes, string Tensor) Minimum(MergePlan plan)
    {
        if (plan.Tensors.Count == 0) return (0, "");
        var largest = plan.Tensors.MaxBy(t => t.WorkingBytes)!;
        return (largest.WorkingBytes + plan.Tensors.Max(t => t.InputBytes) + plan.Tensors.Max(t => t.OutputBytes), largest.Name);
    }

    /// <summary>
    /// <paramref name="options"/> with prefetch and write budgets that keep <paramref name="plan"/> under
    /// <paramref name="capBytes"/>. <see cref="SettingException"/> ("memory cap") when even one tensor at a time does not fit.
    /// </summary>
    public static MergeOptions Apply(MergePlan plan, MergeOptions options, long capBytes)
    {
        if (capBytes <= 0) throw new SettingException("memory cap", $"must be positive, got {capBytes} bytes");
        if (plan.Tensors.Count == 0) return options;
        var (need, tensor) = Minimum(plan);
        long working = plan.PeakWorkingBytes, maxInput = plan.Tensors.Max(t => t.InputBytes), maxOutput = plan.Tensors.Max(t => t.OutputBytes);
        if (capBytes < need)
            throw new SettingException("memory cap",
                $"{ByteSize.Format(capBytes)} is too small: tensor '{tensor}' needs {ByteSize.Format(need)} (largest working set {ByteSize.Format(working)} + one tensor's inputs prefetched {ByteSize.Format(maxInput)} + one result being written {ByteSize.Format(maxOutput)})");
        long spare = capBytes - working;
        long prefetch = Math.Max(maxInput, Math.Min(options.MaxPrefetchBytes, spare / 2));
        long pending = Math.Max(maxOutput, Math.Min(options.MaxPendingWriteBytes, spare - prefetch));
        return options with { MaxPrefetchBytes = prefetch, MaxPendingWriteBytes = pending };
    }
}
