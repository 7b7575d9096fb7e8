namespace MergeDsl.Core.Ir;

/// <summary>One rule of a recipe: parameters matching the pattern are computed by the expression.</summary>
/// <param name="Pattern">Which parameter names the rule applies to (glob or regex).</param>
/// <param name="Expr">How the matching parameters are computed.</param>
public sealed record RecipeRule(NamePattern Pattern, Expr Expr);

/// <summary>
/// A whole merge: an ordered rule list (first match wins) with a fallback for everything else, and
/// the selection of models that take part.
/// </summary>
/// <param name="Rules">The rules, in order; the first whose pattern matches a parameter computes it.</param>
/// <param name="Fallback">The expression for parameters no rule matches.</param>
public sealed record MergeRecipe(IReadOnlyList<RecipeRule> Rules, Expr Fallback)
{
    /// <summary>A recipe that applies one expression to every parameter.</summary>
    public static MergeRecipe Of(Expr expr) => new([], expr);

    /// <summary>
    /// Labels of the experts that take part, in this order; null means every expert given to the
    /// compiler, in input order.
    /// </summary>
    public IReadOnlyList<string>? ExpertLabels { get; init; }

    /// <summary>
    /// The output's number of layers, when it differs from the inputs' (stacked or dropped layers): the output
    /// holds the reference model's tensors outside the layers and, for each layer 0 … n − 1, the tensors of the
    /// reference's layer 0 renumbered; inputs may have other layer counts (every tensor an output reads, through
    /// <see cref="ShiftLayers"/>, must exist). Null: the output has the reference model's tensors.
    /// </summary>
    public int? OutputLayers { get; init; }

    /// <summary>A copy whose output has <paramref name="layers"/> layers (see <see cref="OutputLayers"/>).</summary>
    public MergeRecipe WithOutputLayers(int? layers) => this with { OutputLayers = layers };

    /// <summary>A short name of the method (stored in the output's metadata), e.g. <c>ties</c>.</summary>
    public string Name { get; init; } = "custom";

    /// <summary>The method's parameters as written (stored in the output's metadata).</summary>
    public IReadOnlyDictionary<string, string> Parameters { get; init; } = new Dictionary<string, string>();

    /// <summary>A copy that uses only these experts, in this order.</summary>
    public MergeRecipe WithExperts(IReadOnlyList<string>? labels) => this with { ExpertLabels = labels };

    /// <summary>A copy with a method name and parameters for the metadata.</summary>
    public MergeRecipe WithName(string name, IReadOnlyDictionary<string, string> parameters) =>
        this with { Name = name, Parameters = parameters };

    /// <summary>The expression that computes the named parameter (first matching rule, else the fallback).</summary>
    public Expr ExprFor(string parameter)
    {
        foreach (var rule in Rules)
            if (rule.Pattern.Matches(parameter)) return rule.Expr;
        return Fallback;
    }

    /// <summary>A canonical multi-line rendering: rules in order, then the fallback.</summary>
    public string Describe()
    {
        var lines = new List<string>();
        foreach (var r in Rules) lines.Add($"{r.Pattern.Text} -> {r.Expr}");
        lines.Add($"* (fallback) -> {Fallback}");
        if (ExpertLabels is not null) lines.Add($"experts: {string.Join(", ", ExpertLabels)}");
        if (OutputLayers is { } n) lines.Add($"output layers: {n}");
        return string.Join("\n", lines);
    }
}
