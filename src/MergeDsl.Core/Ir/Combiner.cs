namespace MergeDsl.Core.Ir;

/// <summary>
/// A whole-tensor combination of a stack into one tensor that is not an elementwise reduction
/// (spherical and Riemannian means, SCE, NearSwap, Arcee Fusion). Numeric parameters that users vary
/// by layer or name are <see cref="ScaleFactor"/>s; the compiler resolves them per parameter
/// (<see cref="Resolve"/>) so the kernels see plain numbers.
/// </summary>
public abstract record Combiner
{
    /// <summary>How many stack entries the combiner takes; null for any number ≥ 1.</summary>
    public abstract int? Arity { get; }

    /// <summary>The same combiner with every factor replaced by the constant <paramref name="value"/> gives it.</summary>
    public abstract Combiner Resolve(Func<ScaleFactor, double> value);

    /// <summary>The factors of this combiner, with the name a message calls each by.</summary>
    public abstract IEnumerable<(string Name, ScaleFactor Factor)> Factors { get; }

    /// <summary>A canonical one-line rendering.</summary>
    public sealed override string ToString() => ExprText.Render(this);

    /// <summary>The value of a resolved factor (the kernels' view).</summary>
    public static double Value(ScaleFactor f) =>
        f is ConstantFactor c ? c.Value : throw new InvalidOperationException($"unresolved factor {f}");
}

/// <summary>
/// mergekit's NuSLERP of a pair [a, b]: t = w₁/(w₀ + w₁) (0.5 when |w₀ + w₁| &lt; 1e-6); slerp of
/// the whole flattened tensors (<paramref name="Flatten"/>), else of every vector along the last
/// dimension, or along dimension 0 with <paramref name="RowWise"/> (mergekit's naming); lerp where
/// |sin θ| &lt; 1e-8. Feed it task vectors and add the base for mergekit's base-model form.
/// </summary>
/// <param name="FirstWeight">w₀, the weight of the first tensor of the pair (may vary by layer or name).</param>
/// <param name="SecondWeight">w₁, the weight of the second tensor; t = w₁/(w₀ + w₁).</param>
/// <param name="RowWise">Slerp vectors along dimension 0 instead of the last one (mergekit's <c>nuslerp_row_wise</c>).</param>
/// <param name="Flatten">Slerp the whole flattened tensors as one vector each (mergekit's <c>nuslerp_flatten</c>).</param>
public sealed record NuSlerp(ScaleFactor FirstWeight, ScaleFactor SecondWeight, bool RowWise = false, bool Flatten = true) : Combiner
{
    /// <inheritdoc />
    public override int? Arity => 2;
    /// <inheritdoc />
    public override Combiner Resolve(Func<ScaleFactor, double> value) =>
        this with { FirstWeight = ScaleFactor.Of(value(FirstWeight)), SecondWeight = ScaleFactor.Of(value(SecondWeight)) };
    /// <inheritdoc />
    public override IEnumerable<(string Name, ScaleFactor Factor)> Factors => [("weight 1", FirstWeight), ("weight 2", SecondWeight)];
}

/// <summary>
/// mergekit's Multi-SLERP: barycentric interpolation on the hypersphere of N flattened tensors with
/// the given weights (normalised to sum 1 with <paramref name="NormalizeWeights"/>; no weights: 1 each),
/// see docs/semantics.md.
/// </summary>
/// <param name="Weights">One weight per stack entry, in stack order (empty: 1 each).</param>
/// <param name="NormalizeWeights">Divide the weights by their sum first (mergekit's <c>normalize_weights</c>).</param>
/// <param name="Eps">Norms below this count as zero (mergekit's <c>eps</c>).</param>
public sealed record MultiSlerp(IReadOnlyList<ScaleFactor> Weights, bool NormalizeWeights = true, double Eps = 1e-8) : Combiner
{
    /// <inheritdoc />
    public override int? Arity => Weights.Count == 0 ? null : Weights.Count;
    /// <inheritdoc />
    public override Combiner Resolve(Func<ScaleFactor, double> value) =>
        this with { Weights = Weights.Select(w => ScaleFactor.Of(value(w))).ToArray() };
    /// <inheritdoc />
    public override IEnumerable<(string Name, ScaleFactor Factor)> Factors => Weights.Select((w, i) => ($"weight {i + 1}", w));
}

/// <summary>
/// mergekit's Karcher mean: the Riemannian mean on the unit sphere of the N flattened tensors (equal
/// weights), found by at most <paramref name="MaxIterations"/> fixed-point steps until the tangent
/// norm is below <paramref name="Tolerance"/>, scaled by the mean of their norms.
/// </summary>
/// <param name="MaxIterations">Most fixed-point steps (mergekit's <c>max_iter</c>).</param>
/// <param name="Tolerance">Stop when the tangent step's norm is below this (mergekit's <c>tol</c>).</param>
public sealed record Karcher(int MaxIterations = 10, double Tolerance = 1e-5) : Combiner
{
    /// <inheritdoc />
    public override int? Arity => null;
    /// <inheritdoc />
    public override Combiner Resolve(Func<ScaleFactor, double> value) => this;
    /// <inheritdoc />
    public override IEnumerable<(string Name, ScaleFactor Factor)> Factors => [];
}

/// <summary>
/// SCE (Wan et al., FuseChat, arXiv 2408.07990) over task vectors τᵢ: Select the ⌊selectTopK·#nonzero⌋
/// elements of largest variance across the models, Calculate weights wᵢ = mean(τᵢ²)/Σⱼ mean(τⱼ²),
/// Erase entries against the elected sign (a zero vote elects +1) and return Σ wᵢmᵢτᵢ / max(Σ wᵢmᵢ, 1e-6).
/// </summary>
/// <param name="SelectTopK">Fraction of the nonzero entries, by variance across models, that are kept (mergekit's <c>select_topk</c>).</param>
public sealed record Sce(ScaleFactor SelectTopK) : Combiner
{
    /// <inheritdoc />
    public override int? Arity => null;
    /// <inheritdoc />
    public override Combiner Resolve(Func<ScaleFactor, double> value) => this with { SelectTopK = ScaleFactor.Of(value(SelectTopK)) };
    /// <inheritdoc />
    public override IEnumerable<(string Name, ScaleFactor Factor)> Factors => [("select_topk", SelectTopK)];
}

/// <summary>
/// NearSwap of [a, b] (a: the base): w = clamp(t / max(|a − b|, 1e-6), 0, 1) per element;
/// result w·b + (1 − w)·a: entries where the models are within t of each other take b.
/// </summary>
/// <param name="T">Distance below which an entry takes the second model's value (mergekit's <c>t</c>).</param>
public sealed record NearSwap(ScaleFactor T) : Combiner
{
    /// <inheritdoc />
    public override int? Arity => 2;
    /// <inheritdoc />
    public override Combiner Resolve(Func<ScaleFactor, double> value) => this with { T = ScaleFactor.Of(value(T)) };
    /// <inheritdoc />
    public override IEnumerable<(string Name, ScaleFactor Factor)> Factors => [("t", T)];
}

/// <summary>
/// Arcee Fusion of [a, b] (a: the base): importance = |b − a| · KL(softmax b ‖ softmax a) of each
/// vector along the last dimension; entries whose importance is at least median + 1.5·IQR take b,
/// the others keep a.
/// </summary>
public sealed record ArceeFusion : Combiner
{
    /// <inheritdoc />
    public override int? Arity => 2;
    /// <inheritdoc />
    public override Combiner Resolve(Func<ScaleFactor, double> value) => this;
    /// <inheritdoc />
    public override IEnumerable<(string Name, ScaleFactor Factor)> Factors => [];
}
