using MergeDsl.Core.Ir;

namespace MergeDsl.Core.Compilation;

/// <summary>Operations of the execution graph (element level: stacks are explicit packs of tensors).</summary>
public enum OpKind
{
    /// <summary>Read the parameter's tensor from model <see cref="PlanNode.Model"/> (its stored dtype).</summary>
    Load,
    /// <summary>Convert to the compute dtype.</summary>
    Cast,
    /// <summary>Make a stack of the inputs.</summary>
    Pack,
    /// <summary>Entry <see cref="PlanNode.Index"/> of a stack.</summary>
    Pick,
    /// <summary>a − b.</summary>
    Sub,
    /// <summary>a + b.</summary>
    Add,
    /// <summary>x · <see cref="PlanNode.Scalar"/>.</summary>
    Scale,
    /// <summary>Per-tensor top-k.</summary>
    TopK,
    /// <summary>Whole-model top-k, threshold from the statistics pass of group <see cref="PlanNode.Group"/>.</summary>
    GlobalTopK,
    /// <summary>DARE (seeded by parameter and <see cref="PlanNode.Index"/>).</summary>
    Dare,
    /// <summary>Model Breadcrumbs.</summary>
    Breadcrumbs,
    /// <summary>DELLA MagPrune (seeded by parameter and <see cref="PlanNode.Index"/>).</summary>
    Della,
    /// <summary>TIES sign election (stack → stack).</summary>
    ElectSign,
    /// <summary>Σ.</summary>
    Sum,
    /// <summary>Mean.</summary>
    Mean,
    /// <summary>Disjoint mean.</summary>
    DisjointMean,
    /// <summary>Weighted sum.</summary>
    Weighted,
    /// <summary>mergekit's weight-normalised disjoint mean (<see cref="PlanNode.Weights"/>).</summary>
    DisjointWeightedMean,
    /// <summary>Linear interpolation of a pair.</summary>
    Lerp,
    /// <summary>Spherical interpolation of a pair.</summary>
    Slerp,
    /// <summary>Model Stock of a stack (input 0) against the base (input 1).</summary>
    ModelStock,
    /// <summary>A whole-tensor combination of a stack (<see cref="PlanNode.Combiner"/>, resolved).</summary>
    Combine,
    /// <summary>Input 0 rescaled to the L1 norm of input 1 (mergekit's rescale of sparsified task vectors).</summary>
    RescaleL1,
}

/// <summary>One node of a tensor's execution DAG. Nodes are hash-consed: equal work appears once.</summary>
/// <param name="Id">The node's index in its DAG.</param>
/// <param name="Op">The operation.</param>
/// <param name="Kind">Whether the node yields a tensor or a stack.</param>
/// <param name="Inputs">The ids of the nodes it reads, in argument order.</param>
public sealed record PlanNode(int Id, OpKind Op, ValueKind Kind, IReadOnlyList<int> Inputs)
{
    /// <summary>Model index for <see cref="OpKind.Load"/> (0 = base when there is one, then the experts).</summary>
    public int Model { get; init; } = -1;
    /// <summary>The tensor a <see cref="OpKind.Load"/> reads when it is not the plan's own name (restacked layers).</summary>
    public string? Source { get; init; }
    /// <summary>Stack entry for <see cref="OpKind.Pick"/>; stack position (seeding, global thresholds) for sparsifiers.</summary>
    public int Index { get; init; }
    /// <summary>Scale factor or interpolation t.</summary>
    public double Scalar { get; init; }
    /// <summary>The sparsifier of sparsify nodes.</summary>
    public Sparsifier? Sparsifier { get; init; }
    /// <summary>The rule of <see cref="OpKind.ElectSign"/>.</summary>
    public SignRule Sign { get; init; }
    /// <summary>What a zero vote elects in <see cref="OpKind.ElectSign"/>.</summary>
    public SignTie Tie { get; init; }
    /// <summary>The weights of <see cref="OpKind.Weighted"/>.</summary>
    public IReadOnlyList<double>? Weights { get; init; }
    /// <summary>The combiner of <see cref="OpKind.Combine"/>, every factor resolved to a constant.</summary>
    public Combiner? Combiner { get; init; }
    /// <summary>Global top-k group.</summary>
    public int Group { get; init; } = -1;
    /// <summary>Number of entries of a stack value (1 for a tensor).</summary>
    public int Size { get; init; } = 1;

    /// <summary>One line, e.g. <c>%3 = sub %1 %0</c>.</summary>
    public override string ToString()
    {
        string args = string.Join(" ", Inputs.Select(i => $"%{i}"));
        string extra = Op switch
        {
            OpKind.Load => Source is null ? $"model#{Model}" : $"model#{Model} {Source}",
            OpKind.Pick => $"[{Index}]",
            OpKind.Scale => ExprText.Num(Scalar),
            OpKind.Lerp or OpKind.Slerp => $"t={ExprText.Num(Scalar)}",
            OpKind.TopK or OpKind.Dare or OpKind.Breadcrumbs or OpKind.Della => $"{Sparsifier} @{Index}",
            OpKind.GlobalTopK => $"{Sparsifier} group {Group} @{Index}",
            OpKind.ElectSign => Sign.ToString().ToLowerInvariant() + (Tie == SignTie.Positive ? " tie+" : ""),
            OpKind.Combine => Combiner!.ToString(),
            OpKind.Weighted or OpKind.DisjointWeightedMean => $"[{string.Join(", ", Weights!.Select(ExprText.Num))}]",
            _ => "",
        };
        return $"%{Id} = {Op.ToString().ToLowerInvariant()} {args} {extra}".TrimEnd().Replace("  ", " ");
    }
}
