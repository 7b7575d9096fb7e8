using System.Diagnostics;
using System.Text.RegularExpressions;
using MergeDsl.Core.Checkpoints;

namespace MergeDsl.Core.Partitioning;

/// <summary>What finalize did.</summary>
/// <param name="Target">The output folder written.</param>
/// <param name="Parts">Parts joined.</param>
/// <param name="Shards">Shards moved into place.</param>
/// <param name="Bytes">Bytes of the shards (all verified by their hashes).</param>
/// <param name="VerifyTime">Time hashing the shards.</param>
/// <param name="JoinTime">Time moving shards, writing the index, model card and copied files, and committing.</param>
public sealed record FinalizeResult(string Target, int Parts, int Shards, long Bytes, TimeSpan VerifyTime, TimeSpan JoinTime);

/// <summary>
/// The last step of a partitioned merge: checks that every part of <c>OUT.parts/</c> is present, finished, undamaged
/// and from the same run, then builds <c>OUT</c> from them (the shards moved in, the index, model card and config and
/// tokenizer files written) through the usual atomic output path, and removes <c>OUT.parts/</c>.
/// </summary>
public static partial class PartFinalizer
{
    [GeneratedRegex(@"^part-(\d{1,6})-of-(\d{1,6})$")]
    private static partial Regex PartName();

    /// <summary>Joins the parts of the merge into <paramref name="target"/>; a <see cref="PartitionException"/> naming the first bad part.</summary>
    public static FinalizeResult Finalize(string target, bool overwrite, string overwriteHint = "allow overwriting")
    {
        string partsFolder = PartFolders.PartsFolder(target);
        if (!Directory.Exists(partsFolder))
            throw new PartitionException($"{partsFolder}: no parts to finalize (run the parts with --part I/N first)");
        var found = new List<(int Part, int Parts, string Folder)>();
        foreach (var dir in new DirectoryInfo(partsFolder).EnumerateDirectories())
        {
            var m = PartName().Match(dir.Name);
            if (!m.Success || dir.LinkTarget is not null) continue;
            found.Add((int.Parse(m.Groups[1].Value), int.Parse(m.Groups[2].Value), dir.FullName));
        }
        if (found.Count == 0) throw new PartitionException($"{partsFolder}: no finished part (run the parts with --part I/N first)");
        var counts = found.Select(f => f.Parts).Distinct().ToList();
        if (counts.Count > 1)
            throw new PartitionException($"{partsFolder}: holds parts of partitions into {string.Join(" and ", counts.Order())} parts; remove the folders of the partition you no longer use");
        int n = counts[0];
        var manifests = new PartManifest[n];
        for (int i = 0; i < n; i++)
        {
            string folder = PartFolders.PartFolder(target, i, n);
            string label = $"part {i} of {n} ({folder})";
            if (!Directory.Exists(folder)) throw new PartitionException($"{label}: missing; run it (again) with --part {i}/{n}");
            if (!File.Exists(Path.Combine(folder, OutputMarkers.Finished)) || File.Exists(Path.Combine(folder, OutputMarkers.Unfinished)))
                throw new PartitionException($"{label}: not finished; run it again with --part {i}/{n}");
            var manifest = PartManifest.Read(Path.Combine(folder, PartManifest.FileName), label);
            if (manifest.Part != i || manifest.Parts != n)
                throw new PartitionException($"{label}: its manifest says part {manifest.Part} of {manifest.Parts}; run it again with --part {i}/{n}");
            manifests[i] = manifest;
        }
        // The identity most parts share is the plan; a part with another was run with other inputs, recipe or options.
        string identity = manifests.GroupBy(m => m.Identity).OrderByDescending(g => g.Count()).ThenBy(g => g.Min(m => m.Part)).First().Key;
        foreach (var m in manifests)
            if (m.Identity != identity)
                throw new PartitionException($"part {m.Part} of {n} ({PartFolders.PartFolder(target, m.Part, n)}): from another plan or other inputs than the other parts (recipe, input headers, options or layout differ); run it again with --part {m.Part}/{n}");
        int shardCount = manifests[0].ShardCount;
        var owner = new int[shardCount];
        Array.Fill(owner, -1);
        foreach (var m in manifests)
            foreach (var s in m.Shards)
            {
                if (s.Index < 0 || s.Index >= shardCount || s.File != CheckpointWriter.ShardFileName(s.Index, shardCount) || owner[s.Index] >= 0)
                    throw new PartitionException($"part {m.Part} of {n}: its manifest lists shard '{s.File}' wrongly; run it again with --part {m.Part}/{n}");
                owner[s.Index] = m.Part;
            }
        int lacking = Array.IndexOf(owner, -1);
        if (lacking >= 0)
            throw new PartitionException($"shard {CheckpointWriter.ShardFileName(lacking, shardCount)} is in no part's manifest; the parts are incomplete");

        var verify = Stopwatch.StartNew();
        foreach (var m in manifests)
            foreach (var s in m.Shards)
            {
                string path = Path.Combine(PartFolders.PartFolder(target, m.Part, n), s.File);
                var file = new FileInfo(path);
                if (!file.Exists || file.LinkTarget is not null || file.Length != s.Bytes || ShardJournal.HashFile(path) != s.Sha256)
                    throw new PartitionException($"part {m.Part} of {n}: {s.File} is missing or differs from its manifest (length or sha256); run it again with --part {m.Part}/{n}");
            }
        verify.Stop();

        var join = Stopwatch.StartNew();
        var first = manifests[0];
        var copyThrough = first.CopyFilesFrom is { } source ? HfFiles.CopyThroughFiles(source) : [];
        using var output = OutputFolder.Reserve(target, overwrite,
            first.CopyFilesFrom is { } src ? [OutputInput.Of("copy-through source", src)] : null, overwriteHint);
        string temp = output.CreateTemporary();
        var moved = new List<(string From, string To)>();
        try
        {
            foreach (var m in manifests)
                foreach (var s in m.Shards)
                {
                    string from = Path.Combine(PartFolders.PartFolder(target, m.Part, n), s.File), to = Path.Combine(temp, s.File);
                    File.Move(from, to);
                    moved.Add((from, to));
                }
            if (shardCount > 1)
                CheckpointWriter.WriteIndexFile(temp, manifests.SelectMany(m => m.Shards).SelectMany(s => s.Tensors.Select(t => (t.Name, s.File, t.Bytes))));
            if (first.CopyFilesFrom is { } from2) HfFiles.CopyInto(from2, copyThrough, temp);
            foreach (var (name, text) in first.ExtraFiles)
                File.WriteAllText(Path.Combine(temp, name), text);
            output.Commit(temp);
        }
        catch
        {
            // Back where they were, so that a later finalize (or a part's rerun) finds them.
            foreach (var (from, to) in moved)
                try { File.Move(to, from); } catch (IOException) { }
            try { Directory.Delete(temp, recursive: true); } catch (IOException) { }
            throw;
        }
        Directory.Delete(partsFolder, recursive: true);
        join.Stop();
        return new FinalizeResult(output.Target, n, shardCount, manifests.Sum(m => m.Shards.Sum(s => s.Bytes)), verify.Elapsed, join.Elapsed);
    }
}
