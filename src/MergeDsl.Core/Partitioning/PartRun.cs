using System.Diagnostics;
using MergeDsl.Core.Checkpoints;
using MergeDsl.Core.Compilation;
using MergeDsl.Core.Execution;

namespace MergeDsl.Core.Partitioning;

/// <summary>What one part did.</summary>
/// <param name="Manifest">The manifest written with it.</param>
/// <param name="Stats">The executor's figures (its share only).</param>
/// <param name="ResumedShards">Shards kept from a killed earlier attempt of this part (with <c>Resume</c>).</param>
public sealed record PartResult(PartManifest Manifest, MergeStats Stats, int ResumedShards);

/// <summary>Runs one part of a partitioned merge into its own folder (see <see cref="PartFolders"/>).</summary>
public static class PartRun
{
    /// <summary>
    /// Writes part <paramref name="part"/> of <paramref name="partition"/> into <paramref name="partOutput"/> (reserved by
    /// the caller): only its shards, each identical to the same shard of a run on one machine, plus its
    /// <see cref="PartManifest"/>, atomically. A plan with whole-model statistics needs <paramref name="statistics"/> of
    /// the same run (the statistics step's result); the part then reads only its own tensors' inputs.
    /// </summary>
    public static PartResult Write(MergePlan plan, Partition partition, int part, OutputFolder partOutput, MergeOptions options,
        CheckpointWriterOptions writerOptions, RunIdentity identity, PlanStatistics? statistics)
    {
        if (part < 0 || part >= partition.Parts.Count) throw new SettingException("part", $"must lie in 0..{partition.Parts.Count - 1}, got {part}");
        if (plan.Groups.Count > 0 && statistics is null)
            throw new PartitionException("this merge needs whole-model statistics: run the statistics step first");
        if (statistics is not null && statistics.Identity != identity.Hash)
            throw new PartitionException("the statistics file belongs to another plan or other inputs: run the statistics step again");
        var clock = Stopwatch.StartNew();
        var resolved = Merger.Resolve(plan, options, writerOptions);
        using var writer = CheckpointWriter.Create(partOutput.Target, plan.Layout, resolved with
        {
            Output = partOutput,
            CopyFilesFrom = null,
            ExtraFiles = new Dictionary<string, string>(),
            OnlyShards = partition.Parts[part].Shards.ToHashSet(),
            RunIdentity = $"{identity.Hash} part {part} of {partition.Parts.Count}",
        });
        var left = partition.TensorsOf(part).Where(n => !writer.IsWritten(n)).ToHashSet(StringComparer.Ordinal);
        var stats = Executor.Run(plan, new CheckpointSink(writer), options, new ExecutionScope(left, statistics));
        var bytes = plan.Tensors.ToDictionary(t => t.Name, t => t.OutputBytes, StringComparer.Ordinal);
        var manifest = new PartManifest(identity.Hash, part, partition.Parts.Count, partition.Shards.Count, identity.Recipe, identity.Inputs,
            writer.CompletedShards.Select(r => new ManifestShard(r.Index, r.FileName, r.Bytes, r.Sha256,
                partition.Shards[r.Index].Tensors.Select(n => new ManifestTensor(n, bytes[n])).ToList())).ToList(),
            stats.BytesRead, partition.Parts[part].BytesWritten, clock.Elapsed.TotalSeconds, resolved.CopyFilesFrom, resolved.ExtraFiles);
        writer.AddFile(PartManifest.FileName, manifest.ToJson());
        writer.Commit();
        return new PartResult(manifest, stats, writer.ResumedShards.Count);
    }
}
