namespace MergeDsl

open MergeDsl.Core.Ir

/// Phantom marker: the value is one tensor per parameter.
[<Sealed>]
type TensorKind = class end

/// Phantom marker: the value is a stack, one tensor per expert.
[<Sealed>]
type StackKind = class end

/// A typed recipe expression; the kind ('Tensor or 'Stack) is checked by the F# compiler.
/// It only describes the computation: it holds the C# IR node and no tensor data.
[<Sealed>]
type Value<'Kind> =
    /// The core IR node.
    member Ir: Expr
    override ToString: unit -> string

/// One tensor per parameter.
type Tensor = Value<TensorKind>

/// One tensor per expert, per parameter.
type Stack = Value<StackKind>

/// TIES sign election rule.
type Sign =
    /// sign(Σ xᵢ) (TIES paper).
    | Mass
    /// sign(Σ sign xᵢ).
    | Count

/// Where top-k ranks magnitudes.
type Scope =
    /// Each tensor keeps its own top k.
    | PerTensor
    /// Each expert keeps its top k over the whole model (TIES paper); adds a statistics pass.
    | Global

/// How DARE rescales survivors.
type Rescale =
    /// 1/density (DARE paper, default).
    | Inverse
    /// Keep the L1 norm (mergekit).
    | L1
    /// No rescale.
    | NoRescale

/// How a density becomes a count of kept entries.
type Rounding =
    /// k = round(density·n) (MergeDsl's default).
    | Nearest
    /// k = ⌊density·n⌋ (mergekit).
    | Floor

/// What sign election elects where the vote is exactly 0.
type Tie =
    /// 0: every entry of that element is dropped (MergeDsl's default).
    | ZeroSign
    /// +1: positive entries survive (mergekit).
    | PositiveSign

/// A parameter-name rule of a recipe (pattern -> expression).
[<Sealed>]
type Rule =
    /// The core IR rule.
    member Ir: RecipeRule

/// A scalar that can depend on the parameter (layer gradient, name rules).
[<Sealed>]
type Factor =
    /// The core IR factor.
    member Ir: ScaleFactor

/// Small combinators that build recipes; pipelines read top to bottom:
/// experts |> taskVectors |> sparsify (topK 0.2) |> electSign Mass |> disjointMean |> scale 1.0 |> addTo baseModel
/// (`base` is an F# keyword, hence `baseModel`).
[<RequireQualifiedAccess>]
module Recipe =
    // ---- inputs ----
    /// The base model's tensor.
    val baseModel: Tensor
    /// The selected experts' tensors, as a stack.
    val experts: Stack
    /// The tensor of the model with this label (base or expert).
    val model: label: string -> Tensor
    /// A stack from tensors.
    val stackOf: items: Tensor list -> Stack
    /// The base followed by the stack's entries: [θ₀; θ₁; …].
    val withBase: stack: Stack -> Stack
    /// Entry i (0-based) of a stack.
    val pick: index: int -> stack: Stack -> Tensor

    // ---- stack -> stack ----
    /// θᵢ − θ₀ for every entry (θ₀ = the base model).
    val taskVectors: stack: Stack -> Stack
    /// θᵢ − origin for every entry.
    val taskVectorsFrom: origin: Tensor -> stack: Stack -> Stack
    /// Sparsifies each entry (or the tensor).
    val sparsify: method: Sparsifier -> value: Value<'Kind> -> Value<'Kind>
    /// Keep the round(density·n) largest magnitudes per tensor (ties: lower index wins).
    val topK: density: float -> Sparsifier
    /// Top-k over the whole model per expert (TIES paper).
    val topKGlobal: density: float -> Sparsifier
    /// Top-k with an explicit scope.
    val topKWith: scope: Scope -> density: float -> Sparsifier
    /// Per-tensor top-k with an explicit rounding of k.
    val topKRounded: rounding: Rounding -> density: float -> Sparsifier
    /// DARE: keep with probability density, survivors × 1/density.
    val bernoulli: density: float -> Sparsifier
    /// DARE with an explicit rescale.
    val bernoulliWith: rescale: Rescale -> density: float -> Sparsifier
    /// Model Breadcrumbs: drop the top gamma fraction and the smallest, keeping density.
    val breadcrumbs: density: float -> gamma: float -> Sparsifier
    /// Breadcrumbs with an explicit rounding of both counts.
    val breadcrumbsRounded: rounding: Rounding -> density: float -> gamma: float -> Sparsifier
    /// DELLA MagPrune with keep probabilities in [density − epsilon, density + epsilon].
    val della: density: float -> epsilon: float -> Sparsifier
    /// TIES sign election: entries disagreeing with the elected sign become 0.
    val electSign: rule: Sign -> stack: Stack -> Stack
    /// Sign election with an explicit rule for a zero vote.
    val electSignWith: rule: Sign -> tie: Tie -> stack: Stack -> Stack

    // ---- scalars ----
    /// Multiply by a constant.
    val scale: factor: float -> value: Value<'Kind> -> Value<'Kind>
    /// Multiply by a parameter-dependent factor.
    val scaleBy: factor: Factor -> value: Value<'Kind> -> Value<'Kind>
    /// A constant factor.
    val constant: value: float -> Factor
    /// A gradient over layer index, interpolated between evenly spread anchors (mergekit's [a, b, c]).
    val byLayer: anchors: float list -> Factor
    /// First matching name pattern decides, else the fallback.
    val byName: rules: (string * Factor) list -> fallback: Factor -> Factor

    // ---- stack -> tensor ----
    /// Σ xᵢ.
    val sum: stack: Stack -> Tensor
    /// (1/N) Σ xᵢ.
    val mean: stack: Stack -> Tensor
    /// Σ wᵢ·xᵢ (weights count must equal the stack size; no normalisation).
    val weighted: weights: float list -> stack: Stack -> Tensor
    /// Σ xᵢ / #nonzero per element (TIES).
    val disjointMean: stack: Stack -> Tensor
    /// Σ xᵢ / Σ wᵢ·[xᵢ ≠ 0] per element, divisor 0 → 1 (mergekit's TIES with normalize; xᵢ already weighted).
    val disjointWeightedMean: weights: float list -> stack: Stack -> Tensor
    /// (1 − t)·a + t·b over a stack of exactly two.
    val lerp: t: float -> pair: Stack -> Tensor
    /// Spherical interpolation over a stack of exactly two; lerp when (anti)parallel.
    val slerp: t: float -> pair: Stack -> Tensor
    /// Model Stock of the stack against the base.
    val modelStock: stack: Stack -> Tensor

    // ---- tensor -> tensor ----
    /// a + b.
    val add: a: Tensor -> b: Tensor -> Tensor
    /// x |> addTo origin = origin + x.
    val addTo: origin: Tensor -> x: Tensor -> Tensor
    /// x |> addToBase = θ₀ + x.
    val addToBase: x: Tensor -> Tensor
    /// Copy a tensor unchanged (its own dtype).
    val passthrough: source: Tensor -> Tensor

    // ---- layers ----
    /// The value read `offset` layers further on: every input inside reads the tensor whose layer index
    /// (the first `.N.` of the name) is the parameter's plus `offset`; nested shifts add up. With
    /// `withLayers` it stacks and renumbers layers (a frankenmerge):
    /// select [ rule (layers 2 4) (model "B" |> shiftLayers -1 |> passthrough) ] (model "A" |> passthrough) |> withLayers 4
    /// (A's layers 0-1, then B's layers 1-2 as layers 2-3).
    val shiftLayers: offset: int -> value: Value<'Kind> -> Value<'Kind>
    /// A regex rule pattern ("re:…") for the parameters of layers first … last − 1 (the first `.N.` of the name),
    /// e.g. `layers 2 4` for model.layers.2.* and model.layers.3.*.
    val layers: first: int -> last: int -> string

    // ---- whole recipes ----
    /// A rule: parameters whose name matches (glob, or "re:" regex) use the expression.
    val rule: pattern: string -> expr: Tensor -> Rule
    /// Ordered rules (first match wins) with a fallback.
    val select: rules: Rule list -> fallback: Tensor -> MergeRecipe
    /// One expression for every parameter.
    val ofTensor: expr: Tensor -> MergeRecipe
    /// Restrict (and order) the experts that take part, by label.
    val onExperts: labels: string list -> recipe: MergeRecipe -> MergeRecipe
    /// Name the recipe and record its parameters (stored in the output metadata).
    val named: name: string -> parameters: (string * string) list -> recipe: MergeRecipe -> MergeRecipe
    /// The output has `count` layers, 0 … count − 1: the reference model's (base, else first expert's) tensors
    /// outside the layers and its layer-0 tensors renumbered for each output layer; the inputs may have other
    /// depths (pair it with `shiftLayers` rules; every tensor read must exist, checked from the headers).
    val withLayers: count: int -> recipe: MergeRecipe -> MergeRecipe
    /// Canonical text of a recipe.
    val describe: recipe: MergeRecipe -> string
