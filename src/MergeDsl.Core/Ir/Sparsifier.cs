namespace MergeDsl.Core.Ir;

/// <summary>Over which entries top-k ranks magnitudes.</summary>
public enum TopKScope
{
    /// <summary>Each tensor keeps its own top k = round(density·n).</summary>
    PerTensor,
    /// <summary>
    /// Each expert keeps its top k = round(density·n) entries over all tensors the rule covers
    /// (the TIES paper); compiled into a statistics pass and a merge pass.
    /// </summary>
    Global,
}

/// <summary>How DARE rescales the surviving entries.</summary>
public enum DareRescale
{
    /// <summary>Multiply survivors by 1/density (the DARE paper; unbiased in expectation).</summary>
    Inverse,
    /// <summary>Rescale so the tensor keeps its L1 norm (mergekit's <c>rescale_norm: l1</c>).</summary>
    L1,
    /// <summary>No rescaling.</summary>
    None,
}

/// <summary>TIES sign-election rule.</summary>
public enum SignRule
{
    /// <summary>Elected sign = sign(Σᵢ xᵢ) (TIES paper, mergekit <c>sum</c>).</summary>
    Mass,
    /// <summary>Elected sign = sign(Σᵢ sign(xᵢ)) (mergekit <c>count</c>).</summary>
    Count,
}

/// <summary>A sparsification method applied to each stack entry.</summary>
public abstract record Sparsifier
{
    /// <summary>Fraction of entries kept, in (0, 1].</summary>
    public abstract double Density { get; }

    /// <summary>A canonical one-line rendering.</summary>
    public sealed override string ToString() => ExprText.Render(this);
}

/// <summary>
/// Keep the k = round(density·n) largest |x| (⌊density·n⌋ with <see cref="KeepRounding.Floor"/>, per
/// tensor only); ties broken by lower flat index.
/// </summary>
/// <param name="Density">The fraction of entries kept, in [0, 1].</param>
/// <param name="Scope">Whether k is counted per tensor or over the whole model (the TIES paper's global top-k).</param>
/// <param name="Rounding">How density·n is rounded to a count.</param>
public sealed record TopK(double Density, TopKScope Scope = TopKScope.PerTensor, KeepRounding Rounding = KeepRounding.Nearest) : Sparsifier
{
    /// <inheritdoc />
    public override double Density { get; } = Density;
}

/// <summary>DARE: keep each entry with probability density (seeded per parameter and expert), then rescale.</summary>
/// <param name="Density">The probability of keeping each entry, in (0, 1].</param>
/// <param name="Rescale">How survivors are rescaled (1/density, mergekit's L1 norm, or not at all).</param>
public sealed record Bernoulli(double Density, DareRescale Rescale = DareRescale.Inverse) : Sparsifier
{
    /// <inheritdoc />
    public override double Density { get; } = Density;
}

/// <summary>
/// Model Breadcrumbs: drop the largest gamma·n entries (outliers) and the smallest ones so that
/// k = round(density·n) entries remain (both counts floored with <see cref="KeepRounding.Floor"/>, as mergekit).
/// </summary>
/// <param name="Density">The fraction of entries kept, in [0, 1].</param>
/// <param name="Gamma">The fraction of largest-magnitude entries dropped as outliers.</param>
/// <param name="Rounding">How the counts are rounded.</param>
public sealed record Breadcrumbs(double Density, double Gamma = 0.01, KeepRounding Rounding = KeepRounding.Nearest) : Sparsifier
{
    /// <inheritdoc />
    public override double Density { get; } = Density;
}

/// <summary>Along which entries DELLA ranks magnitudes.</summary>
public enum DellaRank
{
    /// <summary>Per row: the first dimension against all others flattened (a vector is one row).</summary>
    Rows,
    /// <summary>
    /// Along dimension 1, as mergekit's <c>argsort(dim=1)</c>: for 2-D tensors the rows; for 3-D+ each
    /// (i, ·, k, …) fibre separately; a vector is one fibre.
    /// </summary>
    Dim1,
}

/// <summary>
/// DELLA (MagPrune): keep probabilities rise linearly with magnitude rank from density − epsilon to
/// density + epsilon (ranked per <paramref name="Rank"/>); with <paramref name="Rescale"/> survivors
/// are divided by their keep probability (the paper; mergekit's L1 rescale is a <see cref="RescaleL1"/> node).
/// </summary>
/// <param name="Density">The mean keep probability.</param>
/// <param name="Epsilon">Half the spread of keep probabilities around the density.</param>
/// <param name="Rescale">Whether survivors are divided by their keep probability.</param>
/// <param name="Rank">Along which entries magnitudes are ranked.</param>
public sealed record Della(double Density, double Epsilon = 0.1, bool Rescale = true, DellaRank Rank = DellaRank.Rows) : Sparsifier
{
    /// <inheritdoc />
    public override double Density { get; } = Density;
}

/// <summary>
/// Parameter-dependent numbers of a sparsifier (layer gradients, name rules): each one given replaces
/// the sparsifier's own number for every parameter, resolved at compile time.
/// </summary>
/// <param name="Density">Replaces the sparsifier's density (fraction kept), or null to keep its own.</param>
/// <param name="Epsilon">Replaces DELLA's epsilon (half-spread of keep probabilities), or null.</param>
/// <param name="Gamma">Replaces breadcrumbs' gamma (fraction of largest magnitudes dropped), or null.</param>
public sealed record SparsifierFactors(ScaleFactor? Density, ScaleFactor? Epsilon = null, ScaleFactor? Gamma = null)
{
    /// <summary>A canonical one-line rendering.</summary>
    public sealed override string ToString() => ExprText.Render(this);

    /// <summary><paramref name="method"/> with the given factors' values in place of its numbers.</summary>
    public Sparsifier Apply(Sparsifier method, Func<ScaleFactor, double> value)
    {
        double D(double own) => Density is null ? own : value(Density);
        return method switch
        {
            TopK t => new TopK(D(t.Density), t.Scope, t.Rounding),
            Bernoulli b => new Bernoulli(D(b.Density), b.Rescale),
            Breadcrumbs b => new Breadcrumbs(D(b.Density), Gamma is null ? b.Gamma : value(Gamma), b.Rounding),
            Della d => new Della(D(d.Density), Epsilon is null ? d.Epsilon : value(Epsilon), d.Rescale, d.Rank),
            _ => throw new ArgumentException($"unknown sparsifier {method.GetType().Name}"),
        };
    }
}
