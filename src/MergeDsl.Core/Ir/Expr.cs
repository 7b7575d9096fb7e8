namespace MergeDsl.Core.Ir;

/// <summary>The two kinds of value that flow through a recipe.</summary>
public enum ValueKind
{
    /// <summary>One tensor per parameter.</summary>
    Tensor,
    /// <summary>An ordered list of tensors, one per expert (or per listed model).</summary>
    Stack,
}

/// <summary>
/// A per-parameter expression. The same expression is evaluated for every parameter a rule selects;
/// inputs always refer to the tensor of that parameter's name in each model.
/// </summary>
public abstract record Expr
{
    /// <summary>Whether this expression yields a tensor or a stack.</summary>
    public abstract ValueKind Kind { get; }

    /// <summary>Sub-expressions, in argument order.</summary>
    public abstract IReadOnlyList<Expr> Children { get; }

    /// <summary>A canonical one-line rendering (also the structural identity used for sharing).</summary>
    public sealed override string ToString() => ExprText.Render(this);
}

/// <summary>The base (pretrained) model's tensor of this parameter.</summary>
public sealed record BaseModel : Expr
{
    /// <inheritdoc />
    public override ValueKind Kind => ValueKind.Tensor;
    /// <inheritdoc />
    public override IReadOnlyList<Expr> Children => [];
}

/// <summary>The tensor of this parameter in the model with the given label (base or expert).</summary>
/// <param name="Model">The label of the model (base or expert) whose tensor is taken.</param>
public sealed record ModelTensor(string Model) : Expr
{
    /// <inheritdoc />
    public override ValueKind Kind => ValueKind.Tensor;
    /// <inheritdoc />
    public override IReadOnlyList<Expr> Children => [];
}

/// <summary>The selected experts' tensors of this parameter, as a stack (in input order).</summary>
public sealed record Experts : Expr
{
    /// <inheritdoc />
    public override ValueKind Kind => ValueKind.Stack;
    /// <inheritdoc />
    public override IReadOnlyList<Expr> Children => [];
}

/// <summary>
/// A stack made of expressions in order: a tensor item adds one entry, a stack item adds all its
/// entries (so <c>[base, experts]</c> is θ₀, θ₁, …, θₙ).
/// </summary>
/// <param name="Items">The entries, in order; each must be a tensor expression.</param>
public sealed record StackOf(IReadOnlyList<Expr> Items) : Expr
{
    /// <inheritdoc />
    public override ValueKind Kind => ValueKind.Stack;
    /// <inheritdoc />
    public override IReadOnlyList<Expr> Children => Items;
}

/// <summary>Entry <paramref name="Index"/> (0-based) of a stack.</summary>
/// <param name="Stack">The stack to take the entry from.</param>
/// <param name="Index">The entry's position, 0-based.</param>
public sealed record Pick(Expr Stack, int Index) : Expr
{
    /// <inheritdoc />
    public override ValueKind Kind => ValueKind.Tensor;
    /// <inheritdoc />
    public override IReadOnlyList<Expr> Children => [Stack];
}

/// <summary>Task vectors: every stack entry minus the base tensor, θᵢ − θ₀.</summary>
/// <param name="Stack">The stack of fine-tuned tensors θᵢ.</param>
/// <param name="Base">The base tensor θ₀ subtracted from each entry.</param>
public sealed record TaskVectors(Expr Stack, Expr Base) : Expr
{
    /// <inheritdoc />
    public override ValueKind Kind => ValueKind.Stack;
    /// <inheritdoc />
    public override IReadOnlyList<Expr> Children => [Stack, Base];
}

/// <summary>
/// Sparsifies every entry of a stack (or a single tensor) independently. <paramref name="Factors"/>,
/// when given, replace the method's numbers per parameter (gradients, name rules).
/// </summary>
/// <param name="Value">The stack (or tensor) to sparsify.</param>
/// <param name="Method">How entries are kept or dropped (top-k, Bernoulli, breadcrumbs, DELLA).</param>
/// <param name="Factors">Per-parameter replacements of the method's numbers, or null for the method's own.</param>
public sealed record Sparsify(Expr Value, Sparsifier Method, SparsifierFactors? Factors = null) : Expr
{
    /// <inheritdoc />
    public override ValueKind Kind => Value.Kind;
    /// <inheritdoc />
    public override IReadOnlyList<Expr> Children => [Value];
}

/// <summary>
/// TIES sign election: entries whose sign differs from the elected sign become 0; <paramref name="Tie"/>
/// says what a vote of exactly 0 elects.
/// </summary>
/// <param name="Stack">The stack whose entries vote on the sign.</param>
/// <param name="Rule">How the sign is elected (by mass or by count).</param>
/// <param name="Tie">The sign elected when the vote is tied.</param>
public sealed record ElectSign(Expr Stack, SignRule Rule, SignTie Tie = SignTie.Zero) : Expr
{
    /// <inheritdoc />
    public override ValueKind Kind => ValueKind.Stack;
    /// <inheritdoc />
    public override IReadOnlyList<Expr> Children => [Stack];
}

/// <summary>Multiplies a tensor (or every stack entry) by a scalar that may depend on the parameter.</summary>
/// <param name="Value">The tensor or stack to scale.</param>
/// <param name="Factor">The scalar, constant or depending on the parameter's name or layer.</param>
public sealed record Scale(Expr Value, ScaleFactor Factor) : Expr
{
    /// <inheritdoc />
    public override ValueKind Kind => Value.Kind;
    /// <inheritdoc />
    public override IReadOnlyList<Expr> Children => [Value];
}

/// <summary>Stack reductions.</summary>
public enum Reduction
{
    /// <summary>Σᵢ xᵢ.</summary>
    Sum,
    /// <summary>(1/N) Σᵢ xᵢ.</summary>
    Mean,
    /// <summary>Σᵢ xᵢ / max(1, #{i : xᵢ ≠ 0}) per element (TIES disjoint merge).</summary>
    DisjointMean,
}

/// <summary>Reduces a stack to a tensor.</summary>
/// <param name="Stack">The stack to reduce.</param>
/// <param name="Op">The reduction.</param>
public sealed record Reduce(Expr Stack, Reduction Op) : Expr
{
    /// <inheritdoc />
    public override ValueKind Kind => ValueKind.Tensor;
    /// <inheritdoc />
    public override IReadOnlyList<Expr> Children => [Stack];
}

/// <summary>Σᵢ wᵢ·xᵢ (no normalisation; the weights must match the stack size).</summary>
/// <param name="Stack">The stack to combine.</param>
/// <param name="Weights">One weight per entry, in stack order.</param>
public sealed record Weighted(Expr Stack, IReadOnlyList<double> Weights) : Expr
{
    /// <inheritdoc />
    public override ValueKind Kind => ValueKind.Tensor;
    /// <inheritdoc />
    public override IReadOnlyList<Expr> Children => [Stack];
}

/// <summary>
/// mergekit's TIES normalisation: Σᵢ xᵢ / Σᵢ wᵢ·[xᵢ ≠ 0] per element (a divisor of 0 becomes 1). The
/// entries are expected already multiplied by their weights; with every wᵢ = 1 this is the disjoint mean.
/// </summary>
/// <param name="Stack">The stack to combine.</param>
/// <param name="Weights">One weight per entry, in stack order.</param>
public sealed record DisjointWeightedMean(Expr Stack, IReadOnlyList<double> Weights) : Expr
{
    /// <inheritdoc />
    public override ValueKind Kind => ValueKind.Tensor;
    /// <inheritdoc />
    public override IReadOnlyList<Expr> Children => [Stack];
}

/// <summary>Left + Right. Tensor + tensor is a tensor; stack + tensor adds the tensor to every entry.</summary>
/// <param name="Left">The first operand (a tensor or a stack).</param>
/// <param name="Right">The second operand (a tensor).</param>
public sealed record Add(Expr Left, Expr Right) : Expr
{
    /// <inheritdoc />
    public override ValueKind Kind => Left.Kind;
    /// <inheritdoc />
    public override IReadOnlyList<Expr> Children => [Left, Right];
}

/// <summary>(1 − t)·a + t·b over a stack of exactly two tensors [a, b]; t may depend on the parameter.</summary>
/// <param name="Pair">A stack of exactly two tensors [a, b].</param>
/// <param name="T">The interpolation weight: 0 gives a, 1 gives b.</param>
public sealed record Lerp(Expr Pair, ScaleFactor T) : Expr
{
    /// <summary>A constant t.</summary>
    public Lerp(Expr pair, double t) : this(pair, ScaleFactor.Of(t)) { }

    /// <inheritdoc />
    public override ValueKind Kind => ValueKind.Tensor;
    /// <inheritdoc />
    public override IReadOnlyList<Expr> Children => [Pair];
}

/// <summary>Spherical interpolation over a stack of exactly two tensors [a, b]; lerp when (anti)parallel; t may depend on the parameter.</summary>
/// <param name="Pair">A stack of exactly two tensors [a, b].</param>
/// <param name="T">The interpolation weight: 0 gives a, 1 gives b.</param>
public sealed record Slerp(Expr Pair, ScaleFactor T) : Expr
{
    /// <summary>A constant t.</summary>
    public Slerp(Expr pair, double t) : this(pair, ScaleFactor.Of(t)) { }

    /// <inheritdoc />
    public override ValueKind Kind => ValueKind.Tensor;
    /// <inheritdoc />
    public override IReadOnlyList<Expr> Children => [Pair];
}

/// <summary>Model Stock (Wortsman et al.): interpolate between the experts' average and the base.</summary>
/// <param name="Experts">The stack of fine-tuned tensors.</param>
/// <param name="Base">The base tensor.</param>
public sealed record ModelStock(Expr Experts, Expr Base) : Expr
{
    /// <inheritdoc />
    public override ValueKind Kind => ValueKind.Tensor;
    /// <inheritdoc />
    public override IReadOnlyList<Expr> Children => [Experts, Base];
}

/// <summary>Copies the source tensor unchanged (its own dtype; no compute-dtype round trip).</summary>
/// <param name="Source">The expression whose tensor is copied.</param>
public sealed record Passthrough(Expr Source) : Expr
{
    /// <inheritdoc />
    public override ValueKind Kind => ValueKind.Tensor;
    /// <inheritdoc />
    public override IReadOnlyList<Expr> Children => [Source];
}

/// <summary>Combines a stack into one tensor with a whole-tensor method (see <see cref="Combiner"/>).</summary>
/// <param name="Stack">The tensors to combine, in stack order (the order matters for pairwise methods).</param>
/// <param name="Method">The whole-tensor method and its settings.</param>
public sealed record Combine(Expr Stack, Combiner Method) : Expr
{
    /// <inheritdoc />
    public override ValueKind Kind => ValueKind.Tensor;
    /// <inheritdoc />
    public override IReadOnlyList<Expr> Children => [Stack];
}

/// <summary>
/// mergekit's L1 rescale of a sparsified tensor: Value·‖Reference‖₁/‖Value‖₁ per tensor (entry by entry
/// for stacks of equal size), Value unchanged when either norm is below 1e-7.
/// </summary>
/// <param name="Value">The sparsified tensor or stack to rescale.</param>
/// <param name="Reference">The same value before sparsification, whose L1 norm is restored.</param>
public sealed record RescaleL1(Expr Value, Expr Reference) : Expr
{
    /// <inheritdoc />
    public override ValueKind Kind => Value.Kind;
    /// <inheritdoc />
    public override IReadOnlyList<Expr> Children => [Value, Reference];
}

/// <summary>
/// The value of the same parameter <paramref name="Offset"/> layers further on: every input read inside
/// <paramref name="Value"/> reads the tensor whose layer index (the first <c>.N.</c> of the name) is this
/// parameter's plus <paramref name="Offset"/> (nested shifts add up). With <see cref="MergeRecipe.OutputLayers"/>
/// this stacks and renumbers layers (frankenmerges, mergekit's slices). A parameter outside the layers cannot be shifted.
/// </summary>
/// <param name="Value">The expression evaluated for the shifted layer.</param>
/// <param name="Offset">Layers to add to the parameter's layer index when reading inputs (negative reads earlier layers).</param>
public sealed record ShiftLayers(Expr Value, int Offset) : Expr
{
    /// <inheritdoc />
    public override ValueKind Kind => Value.Kind;
    /// <inheritdoc />
    public override IReadOnlyList<Expr> Children => [Value];
}
