using System.Text;
using MergeDsl.Core.Checkpoints;
using MergeDsl.Core.Ir;

namespace MergeDsl.Core.Compilation;

/// <summary>The execution DAG of one output tensor.</summary>
/// <param name="Name">Parameter name (input and output).</param>
/// <param name="Shape">Shape of every input and of the output.</param>
/// <param name="OutputDType">Dtype written.</param>
/// <param name="Nodes">Nodes in topological order; ids are indexes into this list.</param>
/// <param name="Output">The node whose value is written.</param>
/// <param name="Rule">The rule that produced it (pattern text, "fallback", or "non-float copy").</param>
public sealed record TensorPlan(string Name, long[] Shape, DType OutputDType, IReadOnlyList<PlanNode> Nodes, int Output, string Rule)
{
    /// <summary>Elements per tensor.</summary>
    public long ElementCount => Shape.Aggregate(1L, (a, b) => a * b);

    /// <summary>True when the output is an input copied as stored (passthrough / non-float).</summary>
    public bool IsCopy => Nodes[Output].Op == OpKind.Load;

    /// <summary>The load nodes (each input tensor this output reads, once).</summary>
    public IEnumerable<PlanNode> Loads => Nodes.Where(n => n.Op == OpKind.Load);

    /// <summary>Dtype of the reference model's tensor (the compute dtype when inputs keep their dtype).</summary>
    public DType InputDType { get; init; } = DType.F32;

    /// <summary>Bytes read for this tensor (per pass).</summary>
    public long InputBytes { get; init; }

    /// <summary>Bytes written.</summary>
    public long OutputBytes => ElementCount * DTypes.SizeOf(OutputDType);

    /// <summary>A rough upper bound of the memory this tensor's computation holds at once (inputs plus every intermediate in float32).</summary>
    public long WorkingBytes => InputBytes + Nodes.Where(n => n.Op != OpKind.Load).Sum(n => (long)n.Size * ElementCount * 4);
}

/// <summary>A whole-model top-k: its thresholds come from a statistics pass over its member tensors.</summary>
/// <param name="Id">Group index.</param>
/// <param name="Key">The sparsify expression text all members share.</param>
/// <param name="Density">Kept fraction of the group's entries, per stack position.</param>
/// <param name="Members">(tensor index, node id) of every <see cref="OpKind.GlobalTopK"/> node, in plan order.</param>
public sealed record GlobalGroup(int Id, string Key, double Density, IReadOnlyList<(int Tensor, int Node)> Members)
{
    /// <summary>Stack positions present (one threshold each).</summary>
    public IReadOnlyList<int> Positions { get; init; } = [];
    /// <summary>Groups whose thresholds this group's inputs need (nested global top-k).</summary>
    public IReadOnlyList<int> DependsOn { get; init; } = [];
}

/// <summary>A compiled recipe: per-output-tensor DAGs, global-statistics groups, the models read.</summary>
public sealed class MergePlan
{
    internal MergePlan(MergeRecipe recipe, IReadOnlyList<NamedSource> models, bool hasBase, IReadOnlyList<TensorPlan> tensors, IReadOnlyList<GlobalGroup> groups)
    {
        Recipe = recipe;
        Models = models;
        HasBase = hasBase;
        Tensors = tensors;
        Groups = groups;
    }

    /// <summary>The recipe compiled.</summary>
    public MergeRecipe Recipe { get; }
    /// <summary>Models by index: the base first when there is one, then the selected experts.</summary>
    public IReadOnlyList<NamedSource> Models { get; }
    /// <summary>Whether model 0 is the base.</summary>
    public bool HasBase { get; }
    /// <summary>Output tensors in write order (the reference model's order).</summary>
    public IReadOnlyList<TensorPlan> Tensors { get; }
    /// <summary>Global top-k groups (each adds two statistics passes over its members).</summary>
    public IReadOnlyList<GlobalGroup> Groups { get; }

    /// <summary>The output layout for <see cref="CheckpointWriter.Create"/>.</summary>
    public IReadOnlyList<(string Name, DType DType, long[] Shape)> Layout =>
        Tensors.Select(t => (t.Name, t.OutputDType, t.Shape)).ToList();

    /// <summary>Bytes read by the merge pass.</summary>
    public long MergeBytesRead => Tensors.Sum(t => t.InputBytes);

    /// <summary>Bytes read by all statistics passes (two per group, over the group's members).</summary>
    public long StatisticsBytesRead => Groups.Sum(g => 2 * g.Members.Select(m => m.Tensor).Distinct().Sum(i => Tensors[i].InputBytes));

    /// <summary>Bytes written.</summary>
    public long BytesWritten => Tensors.Sum(t => t.OutputBytes);

    /// <summary>Largest single-tensor working set (peak memory is about this plus the prefetch budget and the write queue).</summary>
    public long PeakWorkingBytes => Tensors.Count == 0 ? 0 : Tensors.Max(t => t.WorkingBytes);

    /// <summary>Total number of graph nodes over all tensors.</summary>
    public int NodeCount => Tensors.Sum(t => t.Nodes.Count);

    /// <summary>A human-readable plan: models, rules, ops per tensor (first <paramref name="maxTensors"/>), totals.</summary>
    public string Describe(int maxTensors = 20)
    {
        var sb = new StringBuilder();
        sb.AppendLine($"recipe: {Recipe.Name}");
        foreach (var line in Recipe.Describe().Split('\n')) sb.AppendLine($"  {line}");
        sb.AppendLine("models:");
        for (int i = 0; i < Models.Count; i++)
            sb.AppendLine($"  #{i} {(HasBase && i == 0 ? "base" : "expert")} '{Models[i].Label}'");
        if (Groups.Count > 0)
        {
            sb.AppendLine("phases: statistics (2 passes per global top-k group), then merge");
            foreach (var g in Groups)
                sb.AppendLine($"  group {g.Id}: {g.Key} over {g.Members.Select(m => m.Tensor).Distinct().Count()} tensors, positions [{string.Join(", ", g.Positions)}]");
        }
        else sb.AppendLine("phases: merge");
        sb.AppendLine($"tensors: {Tensors.Count} ({Tensors.Count(t => t.IsCopy)} copied), nodes: {NodeCount}");
        foreach (var t in Tensors.Take(maxTensors))
        {
            sb.AppendLine($"  {t.Name} [{string.Join(", ", t.Shape)}] -> {DTypes.ToSafetensorsName(t.OutputDType)} ({t.Rule})");
            foreach (var n in t.Nodes) sb.AppendLine($"    {n}{(n.Id == t.Output ? "  <- output" : "")}");
        }
        if (Tensors.Count > maxTensors) sb.AppendLine($"  … {Tensors.Count - maxTensors} more");
        sb.AppendLine($"bytes read: {ByteSize.Format(MergeBytesRead)} (merge) + {ByteSize.Format(StatisticsBytesRead)} (statistics)");
        sb.AppendLine($"bytes written: {ByteSize.Format(BytesWritten)}");
        sb.Append($"peak working set (largest tensor): {ByteSize.Format(PeakWorkingBytes)}");
        return sb.ToString();
    }
}
