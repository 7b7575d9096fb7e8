namespace MergeDsl.Core.Execution;

/// <summary>
/// Which tensors of a plan one <see cref="Executor.Run"/>
/// computes: one part of a partitioned merge, or what a resumed run has left to do.
/// </summary>
/// <param name="Tensors">Names of the output tensors to compute (the others are neither read nor written).</param>
/// <param name="Statistics">The whole-model statistics (global top-k thresholds and tie quotas) computed once for every
/// part; null: computed here over the whole model when the plan needs them.</param>
public sealed record ExecutionScope(IReadOnlySet<string> Tensors, PlanStatistics? Statistics = null);
