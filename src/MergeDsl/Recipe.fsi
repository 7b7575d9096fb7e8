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
    /// DELLA as mergekit ranks it (along dimension 1; differs from `della` on 3-D+ tensors) and without
    /// the ÷p rescale: follow it with `rescaleL1` for mergekit's `rescale: true`.
    val dellaMergekit: density: float -> epsilon: float -> Sparsifier
    /// Sparsify with a density that varies by layer or name (the method's other numbers stay).
    val sparsifyBy: density: Factor -> method: Sparsifier -> value: Value<'Kind> -> Value<'Kind>
    /// Sparsify with any of density, epsilon (DELLA) and gamma (breadcrumbs) varying; None keeps the method's own.
    val sparsifyVarying:
        density: Factor option -> epsilon: Factor option -> gamma: Factor option -> method: Sparsifier -> value: Value<'Kind> -> Value<'Kind>
    /// mergekit's rescale of sparsified task vectors: each entry of `value` times ‖reference‖₁/‖value‖₁
    /// (unchanged when either is below 1e-7). `reference` is what was sparsified, e.g.
    /// `tv |> sparsify (topKRounded Floor 0.5) |> rescaleL1 tv`.
    val rescaleL1: reference: Value<'Kind> -> value: Value<'Kind> -> Value<'Kind>
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
    /// Each factor divided by their sum, per parameter (normalised weights that vary by layer or name).
    val shares: factors: Factor list -> Factor list

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
    /// `lerp` with t varying by layer or name.
    val lerpBy: t: Factor -> pair: Stack -> Tensor
    /// `slerp` with t varying by layer or name (mergekit's `t: [0, 0.5, 1]` and self_attn/mlp filters).
    val slerpBy: t: Factor -> pair: Stack -> Tensor
    /// Σ wᵢ·xᵢ with weights that vary by layer or name (as many as the stack has entries).
    val weightedBy: weights: Factor list -> stack: Stack -> Tensor
    /// mergekit's NuSLERP of a pair with weights (w₀, w₁): t = w₁/(w₀ + w₁); slerp of the flattened
    /// tensors (`flatten`), else of the rows (vectors along the last dimension), or of the vectors along
    /// dimension 0 (`rowWise`, mergekit's naming).
    val nuslerpWith: weights: (Factor * Factor) -> rowWise: bool -> flatten: bool -> pair: Stack -> Tensor
    /// NuSLERP of the flattened pair at t (weights 1 − t and t).
    val nuslerp: t: float -> pair: Stack -> Tensor
    /// mergekit's Multi-SLERP: barycentric interpolation on the hypersphere, one weight per entry,
    /// weights normalised to sum 1 when `normalize` (an empty list: weight 1 each), `eps` mergekit's
    /// stabiliser (1e-8 by default).
    val multislerpWith: normalize: bool -> eps: float -> weights: Factor list -> stack: Stack -> Tensor
    /// Multi-SLERP with normalised weights and eps 1e-8.
    val multislerp: weights: Factor list -> stack: Stack -> Tensor
    /// mergekit's Karcher (Riemannian) mean of the entries, equal weights.
    val karcher: maxIterations: int -> tolerance: float -> stack: Stack -> Tensor
    /// SCE of a stack of task vectors: variance top-k select, mean-square weights, sign erase (merged task vector).
    val sce: selectTopK: Factor -> stack: Stack -> Tensor
    /// NearSwap of [base; other]: entries within t of each other take the other model's value.
    val nearswap: t: Factor -> pair: Stack -> Tensor
    /// Arcee Fusion of [base; other]: entries whose |Δ|·KL importance is an outlier take the other model's value.
    val arceeFusion: pair: Stack -> Tensor
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
