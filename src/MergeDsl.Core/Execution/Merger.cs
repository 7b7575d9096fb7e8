using System.Globalization;
using MergeDsl.Core.Checkpoints;
using MergeDsl.Core.Compilation;
using MergeDsl.Core.Ir;

namespace MergeDsl.Core.Execution;

/// <summary>Compile + execute + write a Hugging Face folder, in one call.</summary>
public static class Merger
{
    /// <summary>Metadata recorded in every output shard so a merge can be reproduced.</summary>
    public static IReadOnlyDictionary<string, string> Metadata(MergePlan plan, MergeOptions options)
    {
        var md = new Dictionary<string, string>
        {
            ["format"] = "pt",
            ["mergedsl.method"] = plan.Recipe.Name,
            ["mergedsl.recipe"] = plan.Recipe.Describe(),
            ["mergedsl.parameters"] = string.Join(";", plan.Recipe.Parameters.OrderBy(kv => kv.Key, StringComparer.Ordinal).Select(kv => $"{kv.Key}={kv.Value}")),
            ["mergedsl.base"] = plan.HasBase ? plan.Models[0].Label : "",
            ["mergedsl.experts"] = string.Join(";", plan.Models.Skip(plan.HasBase ? 1 : 0).Select(m => m.Label)),
            ["mergedsl.seed"] = options.Seed.ToString(CultureInfo.InvariantCulture),
            ["mergedsl.compute_dtype"] = options.ComputeDType?.ToString() ?? "input",
        };
        return md;
    }

    /// <summary>
    /// Merges into <paramref name="outputFolder"/> (atomically: nothing appears there unless the whole
    /// merge succeeds). Config and tokenizer files are copied from the base's folder (else the first
    /// expert's) when the input is a checkpoint folder.
    /// </summary>
    public static (MergePlan Plan, MergeStats Stats) ToFolder(
        MergeRecipe recipe, MergeInputs inputs, string outputFolder,
        MergeOptions? options = null, CompileOptions? compileOptions = null, CheckpointWriterOptions? writerOptions = null,
        IReadOnlyDictionary<string, string>? extraMetadata = null)
    {
        var plan = Compiler.Compile(recipe, inputs, compileOptions);
        writerOptions ??= new CheckpointWriterOptions();
        if (extraMetadata is not null)
        {
            var metadata = new Dictionary<string, string>(writerOptions.Metadata);
            foreach (var (k, v) in extraMetadata) metadata[k] = v;
            writerOptions = writerOptions with { Metadata = metadata };
        }
        var written = Write(plan, outputFolder, options ?? MergeOptions.Default, writerOptions);
        return (plan, written.Stats);
    }

    /// <summary>
    /// Runs a compiled plan into <paramref name="outputFolder"/>: the one merge path of the library and the CLI.
    /// The shards carry <see cref="Metadata"/> plus <paramref name="writerOptions"/>' own entries (which may add
    /// keys but not replace the core's); config and tokenizer files come from <c>CopyFilesFrom</c>, else from
    /// the first input that is a checkpoint folder; <c>ExtraFiles</c> (e.g. a model card) appear atomically
    /// with the weights.
    /// </summary>
    public static MergeWriteResult Write(MergePlan plan, string outputFolder, MergeOptions options, CheckpointWriterOptions writerOptions)
    {
        using var writer = CheckpointWriter.Create(outputFolder, plan.Layout, Resolve(plan, options, writerOptions));
        // A resumed run keeps the shards its predecessor finished and verified; only the rest is computed.
        var left = plan.Tensors.Where(t => !writer.IsWritten(t.Name)).Select(t => t.Name).ToHashSet(StringComparer.Ordinal);
        var stats = Executor.Run(plan, new CheckpointSink(writer), options, left.Count == plan.Tensors.Count ? null : new ExecutionScope(left));
        var commit = System.Diagnostics.Stopwatch.StartNew();
        writer.Commit();
        return new MergeWriteResult(stats, commit.Elapsed) { ResumedShards = writer.ResumedShards.Count };
    }

    /// <summary>The writer options a merge of <paramref name="plan"/> writes with: the shards' metadata (the caller's
    /// entries plus <see cref="Metadata"/>) and the copy-through source (given, else the first input that is a folder).</summary>
    public static CheckpointWriterOptions Resolve(MergePlan plan, MergeOptions options, CheckpointWriterOptions writerOptions)
    {
        var metadata = new Dictionary<string, string>(writerOptions.Metadata);
        foreach (var (k, v) in Metadata(plan, options)) metadata[k] = v;
        string? copyFrom = writerOptions.CopyFilesFrom
            ?? plan.Models.Select(m => FolderOf(m.Source)).FirstOrDefault(f => f is not null);
        var extraFiles = WithRewrittenConfig(plan, copyFrom, writerOptions.ExtraFiles);
        return writerOptions with { Metadata = metadata, CopyFilesFrom = copyFrom, ExtraFiles = extraFiles };
    }

    static string? FolderOf(ITensorSource source) => source switch
    {
        Checkpoint c => c.Folder,
        ICheckpointBacked b => b.Checkpoints[0].Folder,
        _ => null,
    };

    /// <summary>
    /// The extra files plus the copied folder's config.json rewritten for the written weights (layer count, vocabulary
    /// size, dtype: <see cref="ConfigRewrite"/>) when it needs a change; extra files are written over copied ones.
    /// </summary>
    static IReadOnlyDictionary<string, string> WithRewrittenConfig(MergePlan plan, string? copyFrom, IReadOnlyDictionary<string, string> extra)
    {
        if (copyFrom is null || extra.ContainsKey(ConfigRewrite.FileName)) return extra;
        string path = Path.Combine(copyFrom, ConfigRewrite.FileName);
        if (!File.Exists(path)) return extra;
        // A config.json that is not JSON fails the merge with a one-line FormatException naming it.
        string? text = ConfigRewrite.Rewrite(ModelFiles.ReadText(path, copyFrom), path, plan.Layout, plan.Recipe.OutputLayers);
        if (text is null) return extra;
        return new Dictionary<string, string>(extra) { [ConfigRewrite.FileName] = text };
    }
}

/// <summary>What <see cref="Merger.Write"/> did.</summary>
/// <param name="Stats">The executor's figures.</param>
/// <param name="CommitTime">Time spent making the output appear (flushing shards, renaming into place).</param>
public sealed record MergeWriteResult(MergeStats Stats, TimeSpan CommitTime)
{
    /// <summary>Shards kept (verified) from the dead run a <c>Resume</c> write continued; their tensors were not computed again.</summary>
    public int ResumedShards { get; init; }
}
