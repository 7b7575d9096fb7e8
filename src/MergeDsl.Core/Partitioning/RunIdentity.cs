using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using MergeDsl.Core.Checkpoints;
using MergeDsl.Core.Compilation;
using MergeDsl.Core.Execution;

namespace MergeDsl.Core.Partitioning;

/// <summary>The header hash of one input model, as a part manifest records it.</summary>
/// <param name="Label">The model's label in the plan.</param>
/// <param name="Sha256">SHA-256 of its canonical header text (every tensor's name, dtype, shape, file and offsets, and its metadata).</param>
public sealed record InputHash(string Label, string Sha256);

/// <summary>
/// What makes two runs produce the same bytes: the recipe's canonical text, the inputs' headers, the output layout
/// and shard size, the shards' metadata, the model card and copy-through source, the seed, compute dtype and device
/// kind. Runs (a resumed one, the parts of one merge) are joined only when their identities agree.
/// </summary>
/// <param name="Hash">SHA-256 over everything listed above, hex.</param>
/// <param name="Recipe">The recipe's canonical text.</param>
/// <param name="Inputs">Each input's label and header hash.</param>
public sealed record RunIdentity(string Hash, string Recipe, IReadOnlyList<InputHash> Inputs)
{
    /// <summary>The identity of writing <paramref name="plan"/> with these options (resolved as <see cref="Merger.Resolve"/> does).</summary>
    public static RunIdentity Of(MergePlan plan, MergeOptions options, CheckpointWriterOptions writerOptions)
    {
        var resolved = Merger.Resolve(plan, options, writerOptions);
        var (maxShardBytes, metadata, extraFiles, copyFilesFrom) = (resolved.MaxShardBytes, resolved.Metadata, resolved.ExtraFiles, resolved.CopyFilesFrom);
        var recipe = new StringBuilder();
        recipe.Append(plan.Recipe.Name).Append('\n').Append(plan.Recipe.Describe()).Append('\n');
        foreach (var (k, v) in plan.Recipe.Parameters.OrderBy(kv => kv.Key, StringComparer.Ordinal)) recipe.Append(k).Append('=').Append(v).Append('\n');
        var inputs = plan.Models.Select(m => new InputHash(m.Label, HeaderHash(m, plan))).ToList();

        var all = new StringBuilder("mergedsl-run-1\n");
        all.Append(recipe);
        foreach (var i in inputs) all.Append("input ").Append(i.Label).Append(' ').Append(i.Sha256).Append('\n');
        all.Append("shard ").Append(maxShardBytes.ToString(CultureInfo.InvariantCulture)).Append('\n');
        all.Append("device ").Append(options.Device?.type.ToString() ?? "CPU").Append('\n');
        foreach (var (k, v) in metadata.OrderBy(kv => kv.Key, StringComparer.Ordinal))
            all.Append("meta ").Append(k).Append('=').Append(v).Append('\n');
        foreach (var (k, v) in extraFiles.OrderBy(kv => kv.Key, StringComparer.Ordinal))
            all.Append("file ").Append(k).Append(' ').Append(Sha(v)).Append('\n');
        all.Append("copy ").Append(copyFilesFrom ?? "").Append('\n');
        foreach (var t in plan.Tensors)
            all.Append("tensor ").Append(t.Name).Append(' ').Append(DTypes.ToSafetensorsName(t.OutputDType)).Append(' ').Append(string.Join(",", t.Shape)).Append('\n');
        return new RunIdentity(Sha(all.ToString()), recipe.ToString(), inputs);
    }

    static string HeaderHash(NamedSource model, MergePlan plan)
    {
        var sb = new StringBuilder();
        if (model.Source is Checkpoint cp)
        {
            foreach (var t in cp.Tensors)
                sb.Append(t.Name).Append(' ').Append(DTypes.ToSafetensorsName(t.DType)).Append(' ').Append(t.ShapeText).Append(' ')
                    .Append(Path.GetFileName(t.File)).Append(' ').Append(t.DataOffset).Append(' ').Append(t.ByteLength).Append('\n');
            foreach (var (k, v) in cp.Metadata.OrderBy(kv => kv.Key, StringComparer.Ordinal)) sb.Append(k).Append('=').Append(v).Append('\n');
        }
        else
            foreach (var t in plan.Tensors)
                if (model.Source.TryGetInfo(t.Name, out var info))
                    sb.Append(info.Name).Append(' ').Append(DTypes.ToSafetensorsName(info.DType)).Append(' ').Append(info.ShapeText).Append('\n');
        return Sha(sb.ToString());
    }

    static string Sha(string text) => Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(text)));
}
