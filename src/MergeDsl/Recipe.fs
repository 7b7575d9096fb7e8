namespace MergeDsl

open MergeDsl.Core.Ir

[<Sealed>]
type TensorKind = class end

[<Sealed>]
type StackKind = class end

[<Sealed>]
type Value<'Kind>(ir: Expr) =
    member _.Ir = ir
    override _.ToString() = ir.ToString()

type Tensor = Value<TensorKind>

type Stack = Value<StackKind>

type Sign =
    | Mass
    | Count

type Scope =
    | PerTensor
    | Global

type Rescale =
    | Inverse
    | L1
    | NoRescale

type Rounding =
    | Nearest
    | Floor

type Tie =
    | ZeroSign
    | PositiveSign

[<Sealed>]
type Rule(ir: RecipeRule) =
    member _.Ir = ir

[<Sealed>]
type Factor(ir: ScaleFactor) =
    member _.Ir = ir

[<RequireQualifiedAccess>]
module Recipe =
    let private mkTensor (e: Expr) : Tensor = Value<TensorKind>(e)
    let private mkStack (e: Expr) : Stack = Value<StackKind>(e)

    let baseModel = mkTensor (BaseModel())
    let experts = mkStack (Experts())
    let model (label: string) = mkTensor (ModelTensor label)
    let stackOf (items: Tensor list) = mkStack (StackOf([| for i in items -> i.Ir |]))
    let withBase (stack: Stack) = mkStack (StackOf([| (BaseModel() :> Expr); stack.Ir |]))
    let pick (index: int) (stack: Stack) = mkTensor (Pick(stack.Ir, index))

    let taskVectors (stack: Stack) = mkStack (TaskVectors(stack.Ir, BaseModel()))
    let taskVectorsFrom (origin: Tensor) (stack: Stack) = mkStack (TaskVectors(stack.Ir, origin.Ir))
    let sparsify (method: Sparsifier) (value: Value<'Kind>) = Value<'Kind>(Sparsify(value.Ir, method))
    let topKWith (scope: Scope) (density: float) : Sparsifier =
        TopK(density, (match scope with PerTensor -> TopKScope.PerTensor | Global -> TopKScope.Global))
    let topK density = topKWith PerTensor density
    let topKGlobal density = topKWith Global density
    let bernoulliWith (rescale: Rescale) (density: float) : Sparsifier =
        Bernoulli(density, (match rescale with Inverse -> DareRescale.Inverse | L1 -> DareRescale.L1 | NoRescale -> DareRescale.None))
    let bernoulli density = bernoulliWith Inverse density
    let private keepRounding rounding = match rounding with Nearest -> KeepRounding.Nearest | Floor -> KeepRounding.Floor
    let topKRounded (rounding: Rounding) (density: float) : Sparsifier = TopK(density, TopKScope.PerTensor, keepRounding rounding)
    let breadcrumbsRounded (rounding: Rounding) (density: float) (gamma: float) : Sparsifier =
        Breadcrumbs(density, gamma, keepRounding rounding)
    let breadcrumbs (density: float) (gamma: float) : Sparsifier = Breadcrumbs(density, gamma)
    let della (density: float) (epsilon: float) : Sparsifier = Della(density, epsilon)
    let dellaMergekit (density: float) (epsilon: float) : Sparsifier = Della(density, epsilon, false, DellaRank.Dim1)
    let electSign (rule: Sign) (stack: Stack) =
        mkStack (ElectSign(stack.Ir, (match rule with Mass -> SignRule.Mass | Count -> SignRule.Count)))
    let electSignWith (rule: Sign) (tie: Tie) (stack: Stack) =
        mkStack (
            ElectSign(
                stack.Ir,
                (match rule with Mass -> SignRule.Mass | Count -> SignRule.Count),
                (match tie with ZeroSign -> SignTie.Zero | PositiveSign -> SignTie.Positive)))

    let constant (value: float) = Factor(ConstantFactor value)
    let scaleBy (factor: Factor) (value: Value<'Kind>) = Value<'Kind>(Scale(value.Ir, factor.Ir))
    let scale (factor: float) (value: Value<'Kind>) = scaleBy (constant factor) value
    let byLayer (anchors: float list) = Factor(LayerGradient(Array.ofList anchors))
    let byName (rules: (string * Factor) list) (fallback: Factor) =
        Factor(ByNameFactor([| for (p, f) in rules -> NamedFactor(NamePattern.Parse p, f.Ir) |], fallback.Ir))
    let shares (factors: Factor list) =
        let parts = [| for f in factors -> f.Ir |]
        factors |> List.mapi (fun i _ -> Factor(ShareFactor(parts, i)))

    let sparsifyVarying (density: Factor option) (epsilon: Factor option) (gamma: Factor option) (method: Sparsifier) (value: Value<'Kind>) =
        let ir (f: Factor option) = match f with Some f -> f.Ir | None -> null
        Value<'Kind>(Sparsify(value.Ir, method, SparsifierFactors(ir density, ir epsilon, ir gamma)))
    let sparsifyBy (density: Factor) (method: Sparsifier) (value: Value<'Kind>) = sparsifyVarying (Some density) None None method value
    let rescaleL1 (reference: Value<'Kind>) (value: Value<'Kind>) = Value<'Kind>(RescaleL1(value.Ir, reference.Ir))

    let sum (stack: Stack) = mkTensor (Reduce(stack.Ir, Reduction.Sum))
    let mean (stack: Stack) = mkTensor (Reduce(stack.Ir, Reduction.Mean))
    let weighted (weights: float list) (stack: Stack) = mkTensor (Weighted(stack.Ir, Array.ofList weights))
    let disjointMean (stack: Stack) = mkTensor (Reduce(stack.Ir, Reduction.DisjointMean))
    let disjointWeightedMean (weights: float list) (stack: Stack) = mkTensor (DisjointWeightedMean(stack.Ir, Array.ofList weights))
    let lerp (t: float) (pair: Stack) = mkTensor (Lerp(pair.Ir, t))
    let slerp (t: float) (pair: Stack) = mkTensor (Slerp(pair.Ir, t))
    let lerpBy (t: Factor) (pair: Stack) = mkTensor (Lerp(pair.Ir, t.Ir))
    let slerpBy (t: Factor) (pair: Stack) = mkTensor (Slerp(pair.Ir, t.Ir))
    let weightedBy (weights: Factor list) (stack: Stack) =
        mkTensor (Reduce(StackOf([| for i, w in List.indexed weights -> Scale(Pick(stack.Ir, i), w.Ir) :> Expr |]), Reduction.Sum))
    let private combine (method: Combiner) (stack: Stack) = mkTensor (Combine(stack.Ir, method))
    let nuslerpWith (weights: Factor * Factor) (rowWise: bool) (flatten: bool) (pair: Stack) =
        let w0, w1 = weights
        combine (NuSlerp(w0.Ir, w1.Ir, rowWise, flatten)) pair
    let nuslerp (t: float) (pair: Stack) = nuslerpWith (constant (1.0 - t), constant t) false true pair
    let multislerpWith (normalize: bool) (eps: float) (weights: Factor list) (stack: Stack) =
        combine (MultiSlerp([| for w in weights -> w.Ir |], normalize, eps)) stack
    let multislerp (weights: Factor list) (stack: Stack) = multislerpWith true 1e-8 weights stack
    let karcher (maxIterations: int) (tolerance: float) (stack: Stack) = combine (Karcher(maxIterations, tolerance)) stack
    let sce (selectTopK: Factor) (stack: Stack) = combine (Sce(selectTopK.Ir)) stack
    let nearswap (t: Factor) (pair: Stack) = combine (NearSwap(t.Ir)) pair
    let arceeFusion (pair: Stack) = combine (ArceeFusion()) pair
    let modelStock (stack: Stack) = mkTensor (ModelStock(stack.Ir, BaseModel()))

    let add (a: Tensor) (b: Tensor) = mkTensor (Add(a.Ir, b.Ir))
    let addTo (origin: Tensor) (x: Tensor) = mkTensor (Add(origin.Ir, x.Ir))
    let addToBase (x: Tensor) = addTo baseModel x
    let passthrough (source: Tensor) = mkTensor (Passthrough source.Ir)
    let shiftLayers (offset: int) (value: Value<'Kind>) = Value<'Kind>(ShiftLayers(value.Ir, offset))
    let layers (first: int) (last: int) =
        if first < 0 || last <= first then invalidArg "last" $"layers {first} {last}: expected 0 <= first < last"
        let alternatives = String.concat "|" [ for i in first .. last - 1 -> string i ]
        $@"re:(?:(?!\.\d+\.).)*\.(?:{alternatives})\..*"

    let rule (pattern: string) (expr: Tensor) = Rule(RecipeRule(NamePattern.Parse pattern, expr.Ir))
    let select (rules: Rule list) (fallback: Tensor) = MergeRecipe([| for r in rules -> r.Ir |], fallback.Ir)
    let ofTensor (expr: Tensor) = MergeRecipe.Of expr.Ir
    let onExperts (labels: string list) (recipe: MergeRecipe) = recipe.WithExperts(Array.ofList labels)
    let named (name: string) (parameters: (string * string) list) (recipe: MergeRecipe) =
        recipe.WithName(name, readOnlyDict parameters)
    let withLayers (count: int) (recipe: MergeRecipe) = recipe.WithOutputLayers(System.Nullable count)
    let describe (recipe: MergeRecipe) = recipe.Describe()
