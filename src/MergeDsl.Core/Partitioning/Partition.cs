using MergeDsl.Core.Checkpoints;
using MergeDsl.Core.Compilation;

namespace MergeDsl.Core.Partitioning;

/// <summary>One output shard of a partitioned merge and what producing it costs.</summary>
/// <param name="Index">Shard index (0-based) in the output layout.</param>
/// <param name="FileName">Its file name, the same as a run on one machine writes.</param>
/// <param name="Tensors">Its tensors' names, in plan order.</param>
/// <param name="BytesRead">Input bytes its tensors read (merge pass).</param>
/// <param name="BytesComputed">Bytes of float32 intermediates its tensors' graphs produce.</param>
/// <param name="BytesWritten">Bytes of its tensors' data.</param>
public sealed record PartitionShard(int Index, string FileName, IReadOnlyList<string> Tensors, long BytesRead, long BytesComputed, long BytesWritten)
{
    /// <summary>The balancing weight: bytes read plus bytes computed.</summary>
    public long Cost => BytesRead + BytesComputed;
}

/// <summary>One part: the shards it writes and their totals.</summary>
/// <param name="Index">The part's 0-based index.</param>
/// <param name="Shards">Indices of the shards it writes, ascending.</param>
/// <param name="Tensors">Output tensors in those shards.</param>
/// <param name="BytesRead">Input bytes its shards read.</param>
/// <param name="BytesComputed">Float32 intermediate bytes its shards compute.</param>
/// <param name="BytesWritten">Bytes of its shards' tensor data.</param>
public sealed record PartitionPart(int Index, IReadOnlyList<int> Shards, int Tensors, long BytesRead, long BytesComputed, long BytesWritten)
{
    /// <summary>The balancing weight: bytes read plus bytes computed.</summary>
    public long Cost => BytesRead + BytesComputed;
}

/// <summary>
/// A partition of a plan's output into parts that separate processes (or machines) write independently. The unit is
/// the output shard: the shard layout is the plan's (tensor order and <c>--shard-size</c>), so each part writes whole
/// shard files byte-identical to a single run's, and the finalize step only moves them into place and writes the
/// index. Shards go to parts by longest-processing-time-first on bytes read plus bytes computed: the costliest
/// remaining shard to the least loaded part (ties: lower index), which keeps every part within one shard of the mean.
/// </summary>
/// <param name="Shards">Every shard of the single-run layout, in order.</param>
/// <param name="Parts">The parts, in index order; together they cover every shard once.</param>
public sealed record Partition(IReadOnlyList<PartitionShard> Shards, IReadOnlyList<PartitionPart> Parts)
{
    /// <summary>Partitions <paramref name="plan"/>'s output (shards of at most <paramref name="maxShardBytes"/>) into <paramref name="parts"/> parts.</summary>
    /// <exception cref="SettingException">"parts": fewer than 1, or more than there are shards.</exception>
    public static Partition Of(MergePlan plan, long maxShardBytes, int parts)
    {
        if (parts < 1) throw new SettingException("parts", $"must be at least 1, got {parts}");
        var index = plan.Tensors.Select((t, i) => (t, i)).ToDictionary(x => x.t.Name, x => x.t, StringComparer.Ordinal);
        var shards = CheckpointWriter.Shards(plan.Layout, maxShardBytes)
            .Select((s, i) =>
            {
                var ts = s.Tensors.Select(t => index[t.Name]).ToList();
                return new PartitionShard(i, s.FileName, ts.Select(t => t.Name).ToList(), ts.Sum(t => t.InputBytes),
                    ts.Sum(Computed), ts.Sum(t => t.OutputBytes));
            })
            .ToList();
        if (parts > shards.Count)
            throw new SettingException("parts", $"{parts} parts, but the output has only {shards.Count} shard(s) of at most {ByteSize.Format(maxShardBytes)}: give a smaller shard size or fewer parts");
        var load = new long[parts];
        var assigned = Enumerable.Range(0, parts).Select(_ => new List<int>()).ToArray();
        foreach (var s in shards.OrderByDescending(s => s.Cost).ThenBy(s => s.Index))
        {
            int best = 0;
            for (int p = 1; p < parts; p++)
                if (load[p] < load[best]) best = p;
            load[best] += s.Cost;
            assigned[best].Add(s.Index);
        }
        var result = assigned.Select((a, p) =>
        {
            var own = a.Order().Select(i => shards[i]).ToList();
            return new PartitionPart(p, own.Select(s => s.Index).ToList(), own.Sum(s => s.Tensors.Count), own.Sum(s => s.BytesRead),
                own.Sum(s => s.BytesComputed), own.Sum(s => s.BytesWritten));
        }).ToList();
        return new Partition(shards, result);
    }

    /// <summary>Float32 bytes produced by a tensor's non-load nodes (what its computation touches beyond its inputs).</summary>
    static long Computed(TensorPlan t) => t.Nodes.Where(n => n.Op != OpKind.Load).Sum(n => (long)n.Size * t.ElementCount * 4);

    /// <summary>The names of the tensors part <paramref name="part"/> writes.</summary>
    public IReadOnlySet<string> TensorsOf(int part) =>
        Parts[part].Shards.SelectMany(s => Shards[s].Tensors).ToHashSet(StringComparer.Ordinal);
}
