using System.Globalization;

namespace MergeDsl.Core.Ir;

/// <summary>
/// Canonical text of expressions. Structurally equal expressions render identically, so the text
/// doubles as the key for sharing common subexpressions.
/// </summary>
public static class ExprText
{
    /// <summary>A number in invariant, round-trippable form.</summary>
    public static string Num(double x) => x.ToString("R", CultureInfo.InvariantCulture);

    /// <summary>Renders an expression.</summary>
    public static string Render(Expr e) => e switch
    {
        BaseModel => "base",
        ModelTensor m => $"model('{m.Model}')",
        Experts => "experts",
        StackOf s => $"[{string.Join(", ", s.Items.Select(Render))}]",
        Pick p => $"{Render(p.Stack)}[{p.Index}]",
        TaskVectors t => $"taskVectors({Render(t.Stack)}, {Render(t.Base)})",
        Sparsify s => $"sparsify({Render(s.Value)}, {Render(s.Method)}{(s.Factors is null ? "" : ", " + Render(s.Factors))})",
        ElectSign s => $"electSign({Render(s.Stack)}, {s.Rule.ToString().ToLowerInvariant()}{(s.Tie == SignTie.Positive ? ", tie+" : "")})",
        Scale s => $"scale({Render(s.Value)}, {Render(s.Factor)})",
        Reduce r => $"{r.Op switch { Reduction.Sum => "sum", Reduction.Mean => "mean", _ => "disjointMean" }}({Render(r.Stack)})",
        Weighted w => $"weighted({Render(w.Stack)}, [{string.Join(", ", w.Weights.Select(Num))}])",
        DisjointWeightedMean w => $"disjointWeightedMean({Render(w.Stack)}, [{string.Join(", ", w.Weights.Select(Num))}])",
        Add a => $"add({Render(a.Left)}, {Render(a.Right)})",
        Lerp l => $"lerp({Render(l.Pair)}, {Render(l.T)})",
        Slerp s => $"slerp({Render(s.Pair)}, {Render(s.T)})",
        Combine c => $"combine({Render(c.Stack)}, {Render(c.Method)})",
        RescaleL1 r => $"rescaleL1({Render(r.Value)}, {Render(r.Reference)})",
        ModelStock m => $"modelStock({Render(m.Experts)}, {Render(m.Base)})",
        Passthrough p => $"passthrough({Render(p.Source)})",
        ShiftLayers s => $"shiftLayers({Render(s.Value)}, {s.Offset.ToString(CultureInfo.InvariantCulture)})",
        _ => throw new ArgumentException($"unknown expression node {e.GetType().Name}"),
    };

    /// <summary>Renders a sparsifier.</summary>
    public static string Render(Sparsifier s) => s switch
    {
        TopK t => $"topK({Num(t.Density)}{(t.Scope == TopKScope.Global ? ", global" : "")}{Rounding(t.Rounding)})",
        Bernoulli b => $"bernoulli({Num(b.Density)}{(b.Rescale == DareRescale.Inverse ? "" : ", " + b.Rescale.ToString().ToLowerInvariant())})",
        Breadcrumbs b => $"breadcrumbs({Num(b.Density)}, {Num(b.Gamma)}{Rounding(b.Rounding)})",
        Della d => $"della({Num(d.Density)}, {Num(d.Epsilon)}{(d.Rescale ? "" : ", norescale")}{(d.Rank == DellaRank.Dim1 ? ", dim1" : "")})",
        _ => throw new ArgumentException($"unknown sparsifier {s.GetType().Name}"),
    };

    static string Rounding(KeepRounding r) => r == KeepRounding.Floor ? ", floor" : "";

    /// <summary>Renders a scale factor.</summary>
    public static string Render(ScaleFactor f) => f switch
    {
        ConstantFactor c => Num(c.Value),
        LayerGradient g => $"byLayer[{string.Join(", ", g.Anchors.Select(Num))}]",
        ByNameFactor n => $"byName[{string.Join(", ", n.Rules.Select(r => $"'{r.Pattern.Text}': {Render(r.Value)}"))}; {Render(n.Fallback)}]",
        ShareFactor s => $"share[{string.Join(", ", s.Parts.Select(Render))}; {s.Index}]",
        _ => throw new ArgumentException($"unknown scale factor {f.GetType().Name}"),
    };

    /// <summary>Renders the parameter-dependent numbers of a sparsifier.</summary>
    public static string Render(SparsifierFactors f) =>
        "by(" + string.Join(", ", new[] { ("density", f.Density), ("epsilon", f.Epsilon), ("gamma", f.Gamma) }
            .Where(p => p.Item2 is not null).Select(p => $"{p.Item1}: {Render(p.Item2!)}")) + ")";

    /// <summary>Renders a combiner.</summary>
    public static string Render(Combiner c) => c switch
    {
        NuSlerp n => $"nuslerp({Render(n.FirstWeight)}, {Render(n.SecondWeight)}{(n.RowWise ? ", rowwise" : "")}{(n.Flatten ? "" : ", noflatten")})",
        MultiSlerp m => $"multislerp([{string.Join(", ", m.Weights.Select(Render))}]{(m.NormalizeWeights ? "" : ", raw")}, {Num(m.Eps)})",
        Karcher k => $"karcher({k.MaxIterations}, {Num(k.Tolerance)})",
        Sce s => $"sce({Render(s.SelectTopK)})",
        NearSwap n => $"nearswap({Render(n.T)})",
        ArceeFusion => "arceeFusion",
        _ => throw new ArgumentException($"unknown combiner {c.GetType().Name}"),
    };
}
