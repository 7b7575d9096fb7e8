namespace MergeDsl

open System
open System.Globalization
open MergeDsl.Core.Ir

type TiesMerge =
    | MergeMean
    | MergeSum

[<RequireQualifiedAccess>]
module Methods =
    let private text (x: float) = x.ToString("R", CultureInfo.InvariantCulture)

    let mergeText merge = match merge with MergeMean -> "mean" | MergeSum -> "sum"
    let scopeText scope = match scope with PerTensor -> "tensor" | Global -> "global"
    let rescaleText rescale = match rescale with Inverse -> "inverse" | L1 -> "l1" | NoRescale -> "none"

    let average = Recipe.ofTensor (Recipe.experts |> Recipe.mean) |> Recipe.named "average" []

    let weightedAverage (weights: float list) =
        let total = List.sum weights
        if total = 0.0 then invalidArg "weights" "weights: the weights sum to 0"
        Recipe.ofTensor (Recipe.experts |> Recipe.weighted [ for w in weights -> w / total ])
        |> Recipe.named "weighted-average" [ "weights", String.Join(",", weights |> List.map text) ]

    let linearFamily name (sparsifier: Sparsifier option) lambda parameters =
        let vectors = Recipe.experts |> Recipe.taskVectors
        let kept = match sparsifier with Some s -> vectors |> Recipe.sparsify s | None -> vectors
        Recipe.ofTensor (kept |> Recipe.sum |> Recipe.scale lambda |> Recipe.addTo Recipe.baseModel)
        |> Recipe.named name parameters

    let tiesFamily name (sparsifier: Sparsifier) lambda merge parameters =
        let combine = match merge with MergeMean -> Recipe.disjointMean | MergeSum -> Recipe.sum
        Recipe.ofTensor (
            Recipe.experts
            |> Recipe.taskVectors
            |> Recipe.sparsify sparsifier
            |> Recipe.electSign Mass
            |> combine
            |> Recipe.scale lambda
            |> Recipe.addTo Recipe.baseModel)
        |> Recipe.named name parameters

    let taskArithmetic lambda = linearFamily "task-arithmetic" None lambda [ "lambda", text lambda ]

    let ties density lambda scope merge =
        tiesFamily "ties" (Recipe.topKWith scope density) lambda merge
            [ "density", text density; "lambda", text lambda; "scope", scopeText scope; "merge", mergeText merge ]

    let dareLinear density lambda rescale =
        linearFamily "dare-linear" (Some(Recipe.bernoulliWith rescale density)) lambda [ "density", text density; "lambda", text lambda ]

    let dareTies density lambda rescale merge =
        tiesFamily "dare-ties" (Recipe.bernoulliWith rescale density) lambda merge
            [ "density", text density; "lambda", text lambda; "merge", mergeText merge ]

    let breadcrumbs density gamma lambda =
        linearFamily "breadcrumbs" (Some(Recipe.breadcrumbs density gamma)) lambda
            [ "density", text density; "gamma", text gamma; "lambda", text lambda ]

    let breadcrumbsTies density gamma lambda merge =
        tiesFamily "breadcrumbs-ties" (Recipe.breadcrumbs density gamma) lambda merge
            [ "density", text density; "gamma", text gamma; "lambda", text lambda; "merge", mergeText merge ]

    let della density epsilon lambda merge =
        tiesFamily "della" (Recipe.della density epsilon) lambda merge
            [ "density", text density; "epsilon", text epsilon; "lambda", text lambda; "merge", mergeText merge ]

    let dellaLinear density epsilon lambda =
        linearFamily "della-linear" (Some(Recipe.della density epsilon)) lambda
            [ "density", text density; "epsilon", text epsilon; "lambda", text lambda ]

    /// `combine` of the experts, or of their task vectors with the base added back when `taskVectors`.
    let private onVectors taskVectors (combine: Stack -> Tensor) =
        if taskVectors then Recipe.experts |> Recipe.taskVectors |> combine |> Recipe.addToBase
        else Recipe.experts |> combine

    let private flagText b = if b then "true" else "false"

    let nuslerp (weights: float * float) rowWise flatten taskVectors =
        let w0, w1 = weights
        let pair = Recipe.nuslerpWith (Recipe.constant w0, Recipe.constant w1) rowWise flatten
        Recipe.ofTensor (onVectors taskVectors pair)
        |> Recipe.named "nuslerp"
            [ "weights", $"{text w0},{text w1}"; "row-wise", flagText rowWise; "flatten", flagText flatten; "task-vectors", flagText taskVectors ]

    let multislerp (weights: float list) normalize taskVectors =
        Recipe.ofTensor (onVectors taskVectors (Recipe.multislerpWith normalize 1e-8 (weights |> List.map Recipe.constant)))
        |> Recipe.named "multislerp"
            [ "weights", String.Join(",", weights |> List.map text); "normalize-weights", flagText normalize; "task-vectors", flagText taskVectors ]

    let karcher maxIterations tolerance =
        Recipe.ofTensor (Recipe.experts |> Recipe.karcher maxIterations tolerance)
        |> Recipe.named "karcher" [ "max-iter", string maxIterations; "tol", text tolerance ]

    let sce selectTopK =
        Recipe.ofTensor (onVectors true (Recipe.sce (Recipe.constant selectTopK)))
        |> Recipe.named "sce" [ "select-topk", text selectTopK ]

    let nearswap t =
        Recipe.ofTensor (Recipe.experts |> Recipe.withBase |> Recipe.nearswap (Recipe.constant t))
        |> Recipe.named "nearswap" [ "t", text t ]

    let arceeFusion = Recipe.ofTensor (Recipe.experts |> Recipe.withBase |> Recipe.arceeFusion) |> Recipe.named "arcee-fusion" []

    let modelStock = Recipe.ofTensor (Recipe.experts |> Recipe.modelStock) |> Recipe.named "model-stock" []

    let slerp t = Recipe.ofTensor (Recipe.experts |> Recipe.withBase |> Recipe.slerp t) |> Recipe.named "slerp" [ "t", text t ]

    let slerpExperts t = Recipe.ofTensor (Recipe.experts |> Recipe.slerp t) |> Recipe.named "slerp" [ "t", text t ]

    let passthrough = Recipe.ofTensor (Recipe.passthrough Recipe.baseModel) |> Recipe.named "passthrough" []

    let rec private floorAndTie (e: Expr) : Expr =
        let sparsifier (m: Sparsifier) : Sparsifier =
            match m with
            | :? TopK as t -> TopK(t.Density, t.Scope, KeepRounding.Floor)
            | :? Breadcrumbs as b -> Breadcrumbs(b.Density, b.Gamma, KeepRounding.Floor)
            | other -> other
        match e with
        | :? Sparsify as x when (x.Method :? Della) ->
            let d = x.Method :?> Della
            let value = floorAndTie x.Value
            let pruned = Sparsify(value, Della(d.Density, d.Epsilon, false, DellaRank.Dim1), x.Factors)
            if d.Rescale then RescaleL1(pruned, value) else pruned
        | :? StackOf as x -> StackOf([| for i in x.Items -> floorAndTie i |])
        | :? Pick as x -> Pick(floorAndTie x.Stack, x.Index)
        | :? TaskVectors as x -> TaskVectors(floorAndTie x.Stack, floorAndTie x.Base)
        | :? Sparsify as x -> Sparsify(floorAndTie x.Value, sparsifier x.Method, x.Factors)
        | :? ElectSign as x -> ElectSign(floorAndTie x.Stack, x.Rule, SignTie.Positive)
        | :? Scale as x -> Scale(floorAndTie x.Value, x.Factor)
        | :? Reduce as x -> Reduce(floorAndTie x.Stack, x.Op)
        | :? Weighted as x -> Weighted(floorAndTie x.Stack, x.Weights)
        | :? DisjointWeightedMean as x -> DisjointWeightedMean(floorAndTie x.Stack, x.Weights)
        | :? Add as x -> Add(floorAndTie x.Left, floorAndTie x.Right)
        | :? Lerp as x -> Lerp(floorAndTie x.Pair, x.T)
        | :? Slerp as x -> Slerp(floorAndTie x.Pair, x.T)
        | :? ModelStock as x -> ModelStock(floorAndTie x.Experts, floorAndTie x.Base)
        | :? Combine as x -> Combine(floorAndTie x.Stack, x.Method)
        | :? RescaleL1 as x -> RescaleL1(floorAndTie x.Value, floorAndTie x.Reference)
        | :? Passthrough as x -> Passthrough(floorAndTie x.Source)
        | leaf when leaf.Children.Count = 0 -> leaf
        | other -> invalidArg "recipe" $"mergekitRules: unknown expression {other.GetType().Name}"

    let mergekitRules (recipe: MergeRecipe) =
        let rules = [| for r in recipe.Rules -> RecipeRule(r.Pattern, floorAndTie r.Expr) |]
        let parameters = readOnlyDict [ yield! recipe.Parameters |> Seq.map (fun kv -> kv.Key, kv.Value); yield "rules", "mergekit" ]
        MergeRecipe(rules, floorAndTie recipe.Fallback)
            .WithExperts(recipe.ExpertLabels)
            .WithName(recipe.Name, parameters)
