namespace MergeDsl

open System
open System.Globalization
open MergeDsl.Core.Ir

/// How TIES combines the elected entries.
type TiesMerge =
    /// Disjoint mean: Σ / #nonzero (TIES paper, mergekit).
    | MergeMean
    /// Disjoint Recipe.sum (FusionBench's merge_func="sum").
    | MergeSum

/// The recipe library: every method is a composition of Recipe primitives.
[<RequireQualifiedAccess>]
module Methods =
    let private tag name (ps: (string * string) list) r = Recipe.named name ps r
    let private f (x: float) = x.ToString("R", CultureInfo.InvariantCulture)

    /// θ = Recipe.mean of the experts.
    let average = Recipe.ofTensor (Recipe.experts |> Recipe.mean) |> tag "average" []

    /// θ = Σ wᵢθᵢ / Σ wᵢ (weights in expert order).
    let weightedAverage (weights: float list) =
        let total = List.sum weights
        if total = 0.0 then invalidArg "weights" "weights: the weights Recipe.sum to 0"
        Recipe.ofTensor (Recipe.experts |> Recipe.weighted [ for w in weights -> w / total ])
        |> tag "weighted-average" [ "weights", String.Join(",", weights |> List.map f) ]

    /// θ = θ₀ + λ Σ τᵢ.
    let taskArithmetic (lambda: float) =
        Recipe.ofTensor (Recipe.experts |> Recipe.taskVectors |> Recipe.sum |> Recipe.scale lambda |> Recipe.addTo Recipe.baseModel)
        |> tag "task-arithmetic" [ "lambda", f lambda ]

    let private combine merge (s: Stack) =
        match merge with
        | MergeMean -> Recipe.disjointMean s
        | MergeSum -> Recipe.sum s

    let private mergeName = function MergeMean -> "mean" | MergeSum -> "sum"
    let private scopeName = function PerTensor -> "tensor" | Global -> "global"

    /// TIES: trim (top-k), elect sign (mass), disjoint merge, θ₀ + λ·merged.
    let ties (density: float) (lambda: float) (scope: Scope) (merge: TiesMerge) =
        Recipe.ofTensor (
            Recipe.experts
            |> Recipe.taskVectors
            |> Recipe.sparsify (Recipe.topKWith scope density)
            |> Recipe.electSign Mass
            |> combine merge
            |> Recipe.scale lambda
            |> Recipe.addTo Recipe.baseModel)
        |> tag "ties" [ "density", f density; "lambda", f lambda; "scope", scopeName scope; "merge", mergeName merge ]

    /// DARE + task arithmetic: θ₀ + λ Σ dare(τᵢ).
    let dareLinear (density: float) (lambda: float) (rescale: Rescale) =
        Recipe.ofTensor (Recipe.experts |> Recipe.taskVectors |> Recipe.sparsify (Recipe.bernoulliWith rescale density) |> Recipe.sum |> Recipe.scale lambda |> Recipe.addTo Recipe.baseModel)
        |> tag "dare-linear" [ "density", f density; "lambda", f lambda ]

    /// DARE + TIES sign election and disjoint mean.
    let dareTies (density: float) (lambda: float) (rescale: Rescale) (merge: TiesMerge) =
        Recipe.ofTensor (
            Recipe.experts
            |> Recipe.taskVectors
            |> Recipe.sparsify (Recipe.bernoulliWith rescale density)
            |> Recipe.electSign Mass
            |> combine merge
            |> Recipe.scale lambda
            |> Recipe.addTo Recipe.baseModel)
        |> tag "dare-ties" [ "density", f density; "lambda", f lambda; "merge", mergeName merge ]

    /// Model Breadcrumbs + task arithmetic.
    let breadcrumbs (density: float) (gamma: float) (lambda: float) =
        Recipe.ofTensor (Recipe.experts |> Recipe.taskVectors |> Recipe.sparsify (Recipe.breadcrumbs density gamma) |> Recipe.sum |> Recipe.scale lambda |> Recipe.addTo Recipe.baseModel)
        |> tag "breadcrumbs" [ "density", f density; "gamma", f gamma; "lambda", f lambda ]

    /// Model Breadcrumbs + TIES sign election and disjoint merge.
    let breadcrumbsTies (density: float) (gamma: float) (lambda: float) (merge: TiesMerge) =
        Recipe.ofTensor (
            Recipe.experts
            |> Recipe.taskVectors
            |> Recipe.sparsify (Recipe.breadcrumbs density gamma)
            |> Recipe.electSign Mass
            |> combine merge
            |> Recipe.scale lambda
            |> Recipe.addTo Recipe.baseModel)
        |> tag "breadcrumbs-ties" [ "density", f density; "gamma", f gamma; "lambda", f lambda; "merge", mergeName merge ]

    /// DELLA: MagPrune, sign election, disjoint merge (as mergekit's della).
    let della (density: float) (epsilon: float) (lambda: float) (merge: TiesMerge) =
        Recipe.ofTensor (
            Recipe.experts
            |> Recipe.taskVectors
            |> Recipe.sparsify (Recipe.della density epsilon)
            |> Recipe.electSign Mass
            |> combine merge
            |> Recipe.scale lambda
            |> Recipe.addTo Recipe.baseModel)
        |> tag "della" [ "density", f density; "epsilon", f epsilon; "lambda", f lambda; "merge", mergeName merge ]

    /// Model Stock over the Recipe.experts against the base.
    let modelStock = Recipe.ofTensor (Recipe.experts |> Recipe.modelStock) |> tag "model-stock" []

    /// SLERP from the base (t = 0) to the single expert (t = 1).
    let slerp (t: float) = Recipe.ofTensor (Recipe.experts |> Recipe.withBase |> Recipe.slerp t) |> tag "slerp" [ "t", f t ]

    /// SLERP between exactly two Recipe.experts (no base).
    let slerpExperts (t: float) = Recipe.ofTensor (Recipe.experts |> Recipe.slerp t) |> tag "slerp" [ "t", f t ]

    /// Every tensor copied from the base.
    let passthrough = Recipe.ofTensor (Recipe.passthrough Recipe.baseModel) |> tag "passthrough" []

    /// The method names byName understands.
    let names =
        [ "average"; "weighted-average"; "task-arithmetic"; "ties"; "dare-linear"; "dare-ties"; "breadcrumbs"
          "breadcrumbs-ties"; "della"; "model-stock"; "slerp"; "passthrough" ]

    let private allowed =
        Map [ "average", []
              "weighted-average", [ "weights" ]
              "task-arithmetic", [ "lambda" ]
              "ties", [ "density"; "lambda"; "scope"; "merge" ]
              "dare-linear", [ "density"; "lambda"; "seed"; "rescale" ]
              "dare-ties", [ "density"; "lambda"; "seed"; "rescale"; "merge" ]
              "breadcrumbs", [ "density"; "gamma"; "lambda" ]
              "breadcrumbs-ties", [ "density"; "gamma"; "lambda"; "merge" ]
              "della", [ "density"; "epsilon"; "lambda"; "seed"; "merge" ]
              "model-stock", []
              "slerp", [ "t" ]
              "passthrough", [] ]

    let private canonical (name: string) =
        match name.Trim().ToLowerInvariant().Replace('_', '-') with
        | "ta" | "task_arithmetic" | "taskarithmetic" -> "task-arithmetic"
        | "linear" | "weighted" | "weightedaverage" -> "weighted-average"
        | "mean" | "avg" -> "average"
        | "modelstock" -> "model-stock"
        | "darelinear" -> "dare-linear"
        | "dareties" -> "dare-ties"
        | "breadcrumbsties" -> "breadcrumbs-ties"
        | n -> n

    exception private Bad of string

    /// A method by name with text parameters, e.g. byName "ties" (Map ["density", "0.2"]).
    /// Returns Error with a one-line message naming the unknown method, parameter or bad value.
    /// "seed" is accepted where randomness is used; it is an executor option (MergeOptions.Seed),
    /// recorded in the recipe parameters so the caller can pass it on.
    let byName (name: string) (parameters: Map<string, string>) : Result<MergeRecipe, string> =
        let m = canonical name
        match Map.tryFind m allowed with
        | None -> Error $"""unknown method '{name}' (known: {String.Join(", ", names)})"""
        | Some known ->
            match parameters |> Map.toList |> List.tryFind (fun (k, _) -> not (List.contains k known)) with
            | Some (k, _) ->
                let takes = if known.IsEmpty then "takes no parameters" else $"""takes {String.Join(", ", known)}"""
                Error $"method '{m}' has no parameter '{k}' ({takes})"
            | None ->
                let num key dflt =
                    match Map.tryFind key parameters with
                    | None -> dflt
                    | Some v ->
                        match Double.TryParse(v, NumberStyles.Float, CultureInfo.InvariantCulture) with
                        | true, x when Double.IsFinite x -> x
                        | _ -> raise (Bad $"parameter '{key}': '{v}' is not a number")
                let v (x: float) = x.ToString("R", CultureInfo.InvariantCulture)
                let density () =
                    let d = num "density" 0.2
                    if not (d > 0.0 && d <= 1.0) then raise (Bad $"parameter 'density': {v d} is outside (0, 1]")
                    d
                let choice key dflt (options: (string * 'a) list) =
                    match Map.tryFind key parameters with
                    | None -> dflt
                    | Some s ->
                        match options |> List.tryFind (fun (o, _) -> o = s.Trim().ToLowerInvariant()) with
                        | Some (_, x) -> x
                        | None -> raise (Bad $"""parameter '{key}': '{s}' is not one of {String.Join(", ", options |> List.map fst)}""")
                let merge () = choice "merge" MergeMean [ "mean", MergeMean; "sum", MergeSum ]
                let rescale () = choice "rescale" Inverse [ "inverse", Inverse; "l1", L1; "none", NoRescale ]
                try
                    let seed =
                        match Map.tryFind "seed" parameters with
                        | Some s when (fst (Int64.TryParse s)) -> [ "seed", s.Trim() ]
                        | Some s -> raise (Bad $"parameter 'seed': '{s}' is not an integer")
                        | None -> []
                    let recipe =
                        match m with
                        | "average" -> average
                        | "weighted-average" ->
                            match Map.tryFind "weights" parameters with
                            | None -> raise (Bad "parameter 'weights' is required (comma-separated, one per expert)")
                            | Some ws ->
                                let parsed =
                                    ws.Split([| ','; ' ' |], StringSplitOptions.RemoveEmptyEntries)
                                    |> Array.map (fun w ->
                                        match Double.TryParse(w, NumberStyles.Float, CultureInfo.InvariantCulture) with
                                        | true, x when Double.IsFinite x -> x
                                        | _ -> raise (Bad $"parameter 'weights': '{w}' is not a number"))
                                if parsed.Length = 0 then raise (Bad "parameter 'weights': no weights given")
                                if Array.sum parsed = 0.0 then raise (Bad "parameter 'weights': the weights Recipe.sum to 0")
                                weightedAverage (List.ofArray parsed)
                        | "task-arithmetic" -> taskArithmetic (num "lambda" 0.3)
                        | "ties" ->
                            ties (density ()) (num "lambda" 1.0) (choice "scope" PerTensor [ "tensor", PerTensor; "global", Global ]) (merge ())
                        | "dare-linear" -> dareLinear (density ()) (num "lambda" 0.3) (rescale ())
                        | "dare-ties" -> dareTies (density ()) (num "lambda" 1.0) (rescale ()) (merge ())
                        | "breadcrumbs" -> breadcrumbs (density ()) (num "gamma" 0.01) (num "lambda" 0.3)
                        | "breadcrumbs-ties" -> breadcrumbsTies (density ()) (num "gamma" 0.01) (num "lambda" 1.0) (merge ())
                        | "della" -> della (density ()) (num "epsilon" 0.1) (num "lambda" 1.0) (merge ())
                        | "model-stock" -> modelStock
                        | "slerp" ->
                            let t = num "t" 0.5
                            if not (t >= 0.0 && t <= 1.0) then raise (Bad $"parameter 't': {v t} is outside [0, 1]")
                            slerp t
                        | _ -> passthrough
                    let ps = [ for kv in recipe.Parameters -> kv.Key, kv.Value ] @ seed
                    Ok (recipe |> Recipe.named recipe.Name ps)
                with
                | Bad msg -> Error $"method '{m}': {msg}"
                | :? ArgumentException as e -> Error $"method '{m}': {e.Message}"
