namespace MergeDsl

open MergeDsl.Core.Ir

/// How TIES combines the entries that survive sign election.
type TiesMerge =
    /// Disjoint mean: Σ / #nonzero (TIES paper, mergekit).
    | MergeMean
    /// Disjoint sum (FusionBench's merge_func="sum").
    | MergeSum

/// The recipe library: every named method is a composition of `Recipe` primitives. The TIES family
/// (TIES, DARE-TIES, breadcrumbs-TIES, DELLA) is one function of its sparsifier, and the linear
/// family (task arithmetic, DARE-linear, breadcrumbs) one function of an optional sparsifier.
/// `MethodRegistry` names these for the CLI, scripts and benchmarks.
[<RequireQualifiedAccess>]
module Methods =
    /// θ = mean of the experts.
    val average: MergeRecipe
    /// θ = Σ wᵢθᵢ / Σ wᵢ (weights in expert order; they must not sum to 0).
    val weightedAverage: weights: float list -> MergeRecipe
    /// θ₀ + λ Σ sparsify(τᵢ): task arithmetic when `sparsifier` is None.
    val linearFamily: name: string -> sparsifier: Sparsifier option -> lambda: float -> parameters: (string * string) list -> MergeRecipe
    /// θ₀ + λ·merge(electSign Mass (sparsify τ)): TIES and its relatives differ only in `sparsifier`.
    val tiesFamily: name: string -> sparsifier: Sparsifier -> lambda: float -> merge: TiesMerge -> parameters: (string * string) list -> MergeRecipe
    /// θ₀ + λ Σ τᵢ.
    val taskArithmetic: lambda: float -> MergeRecipe
    /// TIES: trim (top-k), elect sign (mass), disjoint merge, θ₀ + λ·merged.
    val ties: density: float -> lambda: float -> scope: Scope -> merge: TiesMerge -> MergeRecipe
    /// DARE + task arithmetic: θ₀ + λ Σ dare(τᵢ).
    val dareLinear: density: float -> lambda: float -> rescale: Rescale -> MergeRecipe
    /// DARE + TIES sign election and merge.
    val dareTies: density: float -> lambda: float -> rescale: Rescale -> merge: TiesMerge -> MergeRecipe
    /// Model Breadcrumbs + task arithmetic.
    val breadcrumbs: density: float -> gamma: float -> lambda: float -> MergeRecipe
    /// Model Breadcrumbs + TIES sign election and merge.
    val breadcrumbsTies: density: float -> gamma: float -> lambda: float -> merge: TiesMerge -> MergeRecipe
    /// DELLA: MagPrune, sign election, merge (as mergekit's della).
    val della: density: float -> epsilon: float -> lambda: float -> merge: TiesMerge -> MergeRecipe
    /// DELLA without sign election: θ₀ + λ Σ della(τᵢ) (mergekit's della_linear).
    val dellaLinear: density: float -> epsilon: float -> lambda: float -> MergeRecipe
    /// mergekit's NuSLERP of exactly two experts with weights (w₀, w₁); with `taskVectors` their task
    /// vectors are interpolated and the base added back (mergekit's form with a base_model).
    val nuslerp: weights: (float * float) -> rowWise: bool -> flatten: bool -> taskVectors: bool -> MergeRecipe
    /// mergekit's Multi-SLERP of the experts (one weight each); `taskVectors` as for nuslerp.
    val multislerp: weights: float list -> normalize: bool -> taskVectors: bool -> MergeRecipe
    /// mergekit's Karcher mean of the experts (no base).
    val karcher: maxIterations: int -> tolerance: float -> MergeRecipe
    /// SCE: θ₀ + sce(τ₁…τₙ; selectTopK) (Wan et al., FuseChat; mergekit's sce).
    val sce: selectTopK: float -> MergeRecipe
    /// NearSwap of the base and the single expert at threshold t.
    val nearswap: t: float -> MergeRecipe
    /// Arcee Fusion of the base and the single expert.
    val arceeFusion: MergeRecipe
    /// Model Stock over the experts against the base.
    val modelStock: MergeRecipe
    /// SLERP from the base (t = 0) to the single expert (t = 1).
    val slerp: t: float -> MergeRecipe
    /// SLERP between exactly two experts, no base (t = 0 gives the first).
    val slerpExperts: t: float -> MergeRecipe
    /// Every tensor copied from the base.
    val passthrough: MergeRecipe
    /// The same recipe under mergekit's rules: every top-k and breadcrumbs count floored
    /// (k = ⌊density·n⌋), every sign election electing +1 on a zero vote, and DELLA ranked along
    /// dimension 1 with its ÷p rescale replaced by mergekit's per-tensor L1 rescale; records rules=mergekit.
    /// Per-tensor top-k only (a global top-k is refused by the compiler under floor rounding).
    val mergekitRules: recipe: MergeRecipe -> MergeRecipe
    /// The word a TIES merge is written as in parameters ("mean", "sum").
    val mergeText: merge: TiesMerge -> string
    /// The word a top-k scope is written as in parameters ("tensor", "global").
    val scopeText: scope: Scope -> string
    /// The word a DARE rescale is written as in parameters ("inverse", "l1", "none").
    val rescaleText: rescale: Rescale -> string
