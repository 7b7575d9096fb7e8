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
        options ??= MergeOptions.Default;
        var plan = Compiler.Compile(recipe, inputs, compileOptions);
        var metadata = new Dictionary<string, string>(Metadata(plan, options));
        if (extraMetadata is not null) foreach (var (k, v) in extraMetadata) metadata[k] = v;
        writerOptions ??= new CheckpointWriterOptions();
        string? copyFrom = writerOptions.CopyFilesFrom ?? (plan.Models[0].Source as Checkpoint)?.Folder;
        writerOptions = writerOptions with { Metadata = metadata, CopyFilesFrom = copyFrom };
        using var writer = CheckpointWriter.Create(outputFolder, plan.Layout, writerOptions);
        var stats = Executor.Run(plan, new CheckpointSink(writer), options);
        writer.Commit();
        return (plan, stats);
    }
}
