namespace MergeDsl.Core.Ir;

/// <summary>A scalar that may depend on the parameter being merged; resolved at compile time.</summary>
public abstract record ScaleFactor
{
    /// <summary>A canonical one-line rendering.</summary>
    public sealed override string ToString() => ExprText.Render(this);

    /// <summary>A constant.</summary>
    public static ScaleFactor Of(double value) => new ConstantFactor(value);
}

/// <summary>The same value for every parameter.</summary>
/// <param name="Value">The scalar.</param>
public sealed record ConstantFactor(double Value) : ScaleFactor;

/// <summary>
/// A gradient over layers like mergekit's <c>[a, b, c]</c>: a parameter of layer i (the first
/// <c>.N.</c> number in its name) of L layers sits at t = i/(L−1) (t = 0 when L = 1); the anchors
/// are spread evenly over [0, 1] and the value is interpolated linearly between neighbours.
/// Parameters without a layer index (embeddings, final norm, head) take the first anchor.
/// </summary>
/// <param name="Anchors">The values at evenly spaced positions from the first layer to the last.</param>
public sealed record LayerGradient(IReadOnlyList<double> Anchors) : ScaleFactor;

/// <summary>One name rule of a <see cref="ByNameFactor"/>.</summary>
/// <param name="Pattern">Which parameter names the rule applies to.</param>
/// <param name="Value">The factor for those parameters.</param>
public sealed record NamedFactor(NamePattern Pattern, ScaleFactor Value);

/// <summary>The first rule whose pattern matches the parameter name decides; otherwise the fallback.</summary>
/// <param name="Rules">The rules, in order.</param>
/// <param name="Fallback">The factor for parameters no rule matches.</param>
public sealed record ByNameFactor(IReadOnlyList<NamedFactor> Rules, ScaleFactor Fallback) : ScaleFactor;

/// <summary>
/// Part <paramref name="Index"/> of <paramref name="Parts"/> divided by their sum, each resolved for the
/// parameter: normalised weights that vary by layer or name (a sum of 0 is a compile error).
/// </summary>
/// <param name="Parts">The unnormalised weights, each resolved per parameter.</param>
/// <param name="Index">Which of <paramref name="Parts"/> this factor is the share of (0-based).</param>
public sealed record ShareFactor(IReadOnlyList<ScaleFactor> Parts, int Index) : ScaleFactor;
