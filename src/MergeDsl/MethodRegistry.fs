namespace MergeDsl

open System
open System.Globalization
open MergeDsl.Core.Ir

type NumberRange =
    { Low: float
      LowIncluded: bool
      High: float
      HighIncluded: bool }

    member r.Contains(x: float) =
        Double.IsFinite x
        && (if r.LowIncluded then x >= r.Low else x > r.Low)
        && (if r.HighIncluded then x <= r.High else x < r.High)

    member r.Text =
        let bound (x: float) =
            if Double.IsPositiveInfinity x then "∞"
            elif Double.IsNegativeInfinity x then "-∞"
            else x.ToString("R", CultureInfo.InvariantCulture)
        sprintf "%s%s, %s%s" (if r.LowIncluded then "[" else "(") (bound r.Low) (bound r.High) (if r.HighIncluded then "]" else ")")

    static member Finite = { Low = -infinity; LowIncluded = false; High = infinity; HighIncluded = false }
    static member Fraction = { Low = 0.0; LowIncluded = false; High = 1.0; HighIncluded = true }
    static member Proper = { Low = 0.0; LowIncluded = true; High = 1.0; HighIncluded = false }
    static member Unit = { Low = 0.0; LowIncluded = true; High = 1.0; HighIncluded = true }
    static member NonNegative = { Low = 0.0; LowIncluded = true; High = infinity; HighIncluded = false }

type ParamType =
    | Number of range: NumberRange
    | Integer of low: int64 * high: int64
    | Choice of options: string list
    | Numbers
    | Words
    | Flag
    | Text of accepts: string

type ParamDefault =
    | Required
    | Optional of meaning: string
    | DefaultsTo of value: string

type MethodParam =
    { Name: string
      Type: ParamType
      Default: ParamDefault
      Help: string }

/// A parsed parameter value.
type private ParamValue =
    | NumberValue of float
    | IntegerValue of int64
    | ChoiceValue of string
    | NumbersValue of float list
    | WordsValue of string list
    | FlagValue of bool
    | TextValue of string

[<Sealed>]
type MethodArgs internal (methodName: string, values: Map<string, string * obj>, given: Set<string>) =
    let get name =
        match values.TryFind name with
        | Some (_, v) -> v
        | None -> invalidOp $"method '{methodName}' has no value for parameter '{name}'"
    member _.Number(name: string) = get name :?> float
    member _.Integer(name: string) = get name :?> int64
    member _.Choice(name: string) = get name :?> string
    member _.Numbers(name: string) = get name :?> float list
    member _.Words(name: string) = get name :?> string list
    member _.Flag(name: string) = get name :?> bool
    member _.TryText(name: string) = values.TryFind name |> Option.map fst
    member _.IsGiven(name: string) = given.Contains name

type ModelCount =
    | AtLeast of count: int
    | Exactly of count: int

type MethodBuild =
    | Merge of build: (MethodArgs -> MergeRecipe)
    | Upscaling of build: (MethodArgs -> MoeSpec)

type MergeMethod =
    { Name: string
      Aliases: string list
      Summary: string
      Parameters: MethodParam list
      Models: ModelCount
      Constraint: MethodArgs -> string option
      Build: MethodBuild }

type ResolvedMethod =
    { Method: MergeMethod
      Args: MethodArgs
      Build: BuiltMethod }

and BuiltMethod =
    | BuiltMerge of recipe: MergeRecipe
    | BuiltUpscaling of spec: MoeSpec

[<RequireQualifiedAccess>]
module MethodRegistry =
    let private inv = CultureInfo.InvariantCulture

    // ---- parameter declarations shared by several methods ----
    let private p name ty dflt help = { Name = name; Type = ty; Default = dflt; Help = help }
    let private density dflt = p "density" (Number NumberRange.Fraction) (DefaultsTo dflt) "fraction of each task vector's entries kept"
    let private lambda dflt = p "lambda" (Number NumberRange.Finite) (DefaultsTo dflt) "scale of the merged task vector"
    let private merge = p "merge" (Choice [ "mean"; "sum" ]) (DefaultsTo "mean") "disjoint mean (TIES paper, mergekit) or disjoint sum (FusionBench)"
    let private rescale = p "rescale" (Choice [ "inverse"; "l1"; "none" ]) (DefaultsTo "inverse") "DARE survivors × 1/density (paper), keep the L1 norm (mergekit), or none"
    let private seed = p "seed" (Integer(Int64.MinValue, Int64.MaxValue)) (Optional "0") "seed of the random masks (per tensor name)"
    let private gamma = p "gamma" (Number NumberRange.Proper) (DefaultsTo "0.01") "fraction of largest magnitudes dropped as outliers"
    let private epsilon = p "epsilon" (Number NumberRange.NonNegative) (DefaultsTo "0.1") "keep probabilities span density ± epsilon by magnitude rank"

    let private rules =
        p "rules" (Choice [ "paper"; "mergekit" ]) (DefaultsTo "paper")
            "counting rules: round(density·n) and a zero sign vote electing 0 (paper), or ⌊density·n⌋ and +1 (mergekit)"

    /// Applies `rules=mergekit` (see Methods.mergekitRules); paper rules leave the recipe as built.
    let private withRules (build: MethodArgs -> MergeRecipe) (a: MethodArgs) =
        let recipe = build a
        if a.Choice "rules" = "mergekit" then Methods.mergekitRules recipe else recipe

    let private noConstraint (_: MethodArgs) = None

    let private positive = { Low = 0.0; LowIncluded = false; High = infinity; HighIncluded = false }

    let private dellaBounds (a: MethodArgs) =
        let d, e = a.Number "density", a.Number "epsilon"
        if d < 1.0 && not (d - e > 0.0 && d + e <= 1.0) then
            Some $"""density ± epsilon must stay inside (0, 1] (density {d.ToString("R", inv)}, epsilon {e.ToString("R", inv)})"""
        else None

    let private tiesMerge (a: MethodArgs) = if a.Choice "merge" = "sum" then MergeSum else MergeMean
    let private dareRescale (a: MethodArgs) =
        match a.Choice "rescale" with
        | "l1" -> L1
        | "none" -> NoRescale
        | _ -> Inverse

    let private staticMethod name aliases summary parameters build =
        { Name = name; Aliases = aliases; Summary = summary; Parameters = parameters; Models = AtLeast 1
          Constraint = noConstraint; Build = Merge build }

    let private routing (text: string) : Routing option =
        match text.Trim().ToLowerInvariant() with
        | "dense" -> Some Routing.Dense
        | t when t.StartsWith "top-k:" ->
            match Int32.TryParse(t.Substring 6, NumberStyles.Integer, inv) with
            | true, k when k >= 1 -> Some(Routing.TopK k)
            | _ -> raise (ArgumentException $"parameter 'routing': '{text}': top-k:K needs a whole K ≥ 1")
        | t when t.StartsWith "top-p:" ->
            match Double.TryParse(t.Substring 6, NumberStyles.Float, inv) with
            | true, q when q > 0.0 && q <= 1.0 -> Some(Routing.TopP q)
            | _ -> raise (ArgumentException $"parameter 'routing': '{text}': top-p:P needs P in (0, 1]")
        | _ -> raise (ArgumentException $"parameter 'routing': '{text}' is not dense, top-k:K or top-p:P")

    let private upscaleParameters =
        [ p "lambda" (Number NumberRange.Finite) (DefaultsTo "0.3") "task-arithmetic λ of the parameters that are not upscaled"
          p "init-lambda" (Number NumberRange.Finite) (DefaultsTo "0.3") "initial route of every expert (router bias)"
          p "router-depth" (Integer(0L, 2L)) (DefaultsTo "2") "router layers: 0 (bias only), 1 or 2"
          p "modules" Words (DefaultsTo "*.mlp") "module-path patterns to upscale (glob or re:)"
          p "batch-reduce" Flag (DefaultsTo "false") "one route per batch instead of per sample"
          p "routing" (Text "dense, top-k:K or top-p:P") (Optional "dense (WEMoE), top-1 (SMILE)") "expert selection"
          p "keep" (Number NumberRange.Fraction) (Optional "0.1 (E-WEMoE), 1") "fraction of each task vector kept"
          p "shared-router" Flag (DefaultsTo "false") "one router shared by every upscaled module"
          p "rank" (Integer(1L, 1_000_000L)) (DefaultsTo "16") "SMILE expert rank k"
          p "gate-rank" (Integer(1L, 1_000_000L)) (DefaultsTo "4") "SMILE gate rank g"
          p "seed" (Integer(Int64.MinValue, Int64.MaxValue)) (DefaultsTo "42") "router initialisation seed" ]

    let private upscaleMethod name aliases summary (start: MoeSpec) =
        { Name = name; Aliases = aliases; Summary = summary; Parameters = upscaleParameters; Models = AtLeast 1
          Constraint = noConstraint
          Build =
            Upscaling(fun a ->
                { start with
                    Modules = a.Words "modules"
                    Rest = Methods.taskArithmetic (a.Number "lambda")
                    RouterDepth = int (a.Integer "router-depth")
                    InitLambda = a.Number "init-lambda"
                    BatchReduce = a.Flag "batch-reduce"
                    Routing = a.TryText "routing" |> Option.bind routing
                    Keep = (if a.IsGiven "keep" then Some(a.Number "keep") else start.Keep)
                    SharedRouter = a.Flag "shared-router"
                    Rank = int (a.Integer "rank")
                    GateRank = int (a.Integer "gate-rank")
                    Seed = a.Integer "seed" }) }

    let all: MergeMethod list =
        [ staticMethod "average" [ "mean"; "avg"; "simple-average" ] "mean of the experts" [] (fun _ -> Methods.average)
          { staticMethod "weighted-average" [ "linear"; "weighted" ] "Σ wᵢθᵢ / Σ wᵢ"
                [ p "weights" Numbers Required "one weight per expert, comma-separated (normalised to sum 1)" ]
                (fun a -> Methods.weightedAverage (a.Numbers "weights")) with
              Constraint = fun a -> if List.sum (a.Numbers "weights") = 0.0 then Some "parameter 'weights': the weights sum to 0" else None }
          staticMethod "task-arithmetic" [ "ta" ] "θ₀ + λ Σ τᵢ" [ lambda "0.3" ] (fun a -> Methods.taskArithmetic (a.Number "lambda"))
          { staticMethod "ties" [ "ties-merging" ] "θ₀ + λ·merge(electSign (topK τ))"
                [ density "0.2"; lambda "1.0"
                  p "scope" (Choice [ "tensor"; "global" ]) (DefaultsTo "tensor") "top-k per tensor, or over the whole model (TIES paper)"
                  merge; rules ]
                (withRules (fun a ->
                    let scope = if a.Choice "scope" = "global" then Global else PerTensor
                    Methods.ties (a.Number "density") (a.Number "lambda") scope (tiesMerge a))) with
              Constraint =
                fun a ->
                    if a.Choice "rules" = "mergekit" && a.Choice "scope" = "global" then
                        Some "parameter 'rules': mergekit's rules count per tensor; use scope=tensor"
                    else None }
          staticMethod "dare-linear" [] "θ₀ + λ Σ dare(τᵢ)" [ density "0.2"; lambda "0.3"; rescale; seed ]
              (fun a -> Methods.dareLinear (a.Number "density") (a.Number "lambda") (dareRescale a))
          staticMethod "dare-ties" [] "θ₀ + λ·merge(electSign (dare τ))" [ density "0.2"; lambda "1.0"; rescale; merge; seed; rules ]
              (withRules (fun a -> Methods.dareTies (a.Number "density") (a.Number "lambda") (dareRescale a) (tiesMerge a)))
          staticMethod "breadcrumbs" [ "model-breadcrumbs" ] "θ₀ + λ Σ breadcrumbs(τᵢ)" [ density "0.2"; gamma; lambda "0.3"; rules ]
              (withRules (fun a -> Methods.breadcrumbs (a.Number "density") (a.Number "gamma") (a.Number "lambda")))
          staticMethod "breadcrumbs-ties" [] "θ₀ + λ·merge(electSign (breadcrumbs τ))" [ density "0.2"; gamma; lambda "1.0"; merge; rules ]
              (withRules (fun a -> Methods.breadcrumbsTies (a.Number "density") (a.Number "gamma") (a.Number "lambda") (tiesMerge a)))
          { staticMethod "della" [] "θ₀ + λ·merge(electSign (della τ))" [ density "0.2"; epsilon; lambda "1.0"; merge; seed; rules ]
                (withRules (fun a -> Methods.della (a.Number "density") (a.Number "epsilon") (a.Number "lambda") (tiesMerge a))) with
              Constraint = dellaBounds }
          { staticMethod "della-linear" [] "θ₀ + λ Σ della(τᵢ)"
                [ density "1.0"; p "epsilon" (Number NumberRange.NonNegative) (DefaultsTo "0.15") "keep probabilities span density ± epsilon by magnitude rank"
                  lambda "1.0"; seed; rules ]
                (withRules (fun a -> Methods.dellaLinear (a.Number "density") (a.Number "epsilon") (a.Number "lambda"))) with
              Constraint = dellaBounds }
          { staticMethod "nuslerp" [] "NuSLERP: slerp of two models (or task vectors) at t = w₂/(w₁ + w₂), per row or flattened"
                [ p "weights" Numbers Required "two weights, comma-separated (t = w₂/(w₁ + w₂))"
                  p "row-wise" Flag (DefaultsTo "false") "slerp the vectors along dimension 0 instead of the rows (mergekit's nuslerp_row_wise)"
                  p "flatten" Flag (DefaultsTo "true") "slerp the whole flattened tensors (mergekit's nuslerp_flatten)"
                  p "task-vectors" Flag (DefaultsTo "false") "interpolate θᵢ − θ₀ and add --base back (mergekit with base_model)" ]
                (fun a ->
                    match a.Numbers "weights" with
                    | [ w0; w1 ] -> Methods.nuslerp (w0, w1) (a.Flag "row-wise") (a.Flag "flatten") (a.Flag "task-vectors")
                    | ws -> raise (ArgumentException $"parameter 'weights': nuslerp takes two weights, got {ws.Length}")) with
              Models = Exactly 2 }
          staticMethod "multislerp" [ "multi-slerp" ] "barycentric interpolation of the experts on the hypersphere"
              [ p "weights" Numbers (Optional "equal") "one weight per expert, comma-separated"
                p "normalize-weights" Flag (DefaultsTo "true") "divide the weights by their sum"
                p "task-vectors" Flag (DefaultsTo "false") "interpolate θᵢ − θ₀ and add --base back (mergekit with base_model)" ]
              (fun a ->
                  let weights = if a.IsGiven "weights" then a.Numbers "weights" else []
                  Methods.multislerp weights (a.Flag "normalize-weights") (a.Flag "task-vectors"))
          staticMethod "karcher" [] "Riemannian (Karcher) mean of the experts on the hypersphere, scaled by their mean norm"
              [ p "max-iter" (Integer(1L, 1_000_000L)) (DefaultsTo "10") "fixed-point iterations at most"
                p "tol" (Number positive) (DefaultsTo "1e-05") "convergence tolerance" ]
              (fun a -> Methods.karcher (int (a.Integer "max-iter")) (a.Number "tol"))
          staticMethod "sce" [] "θ₀ + SCE(τ): variance top-k select, mean-square weights, sign erase"
              [ p "select-topk" (Number NumberRange.Unit) (DefaultsTo "1.0") "fraction of elements (of nonzero variance across experts) kept" ]
              (fun a -> Methods.sce (a.Number "select-topk"))
          { staticMethod "nearswap" [] "base, with the entries within t of the expert taken from the expert (weight clamp(t/|Δ|, 0, 1))"
                [ p "t" (Number NumberRange.NonNegative) Required "similarity threshold" ]
                (fun a -> Methods.nearswap (a.Number "t")) with
              Models = Exactly 1 }
          { staticMethod "arcee-fusion" [] "base, with the entries of outlying |Δ|·KL importance taken from the expert" [] (fun _ -> Methods.arceeFusion) with
              Models = Exactly 1 }
          staticMethod "model-stock" [] "Model Stock of the experts against the base" [] (fun _ -> Methods.modelStock)
          { staticMethod "slerp" [] "spherical interpolation between two models (t = 0: the first)"
                [ p "t" (Number NumberRange.Unit) (DefaultsTo "0.5") "interpolation point" ]
                (fun a -> Methods.slerpExperts (a.Number "t")) with
              Models = Exactly 2 }
          { staticMethod "passthrough" [] "every tensor copied from the base" [] (fun _ -> Methods.passthrough) with
              Models = AtLeast 0 }
          upscaleMethod "wemoe" [ "we-moe" ] "weight-ensembling MoE: MLPs become routed sums of task vectors" Upscale.wemoe
          upscaleMethod "e-wemoe" [ "ewemoe"; "sparse-wemoe" ] "WEMoE with task vectors pruned to a kept fraction" Upscale.ewemoe
          upscaleMethod "smile" [] "training-free low-rank SVD experts routed per token" Upscale.smile ]

    let names = all |> List.map (fun m -> m.Name)

    let merges = all |> List.filter (fun m -> match m.Build with Merge _ -> true | Upscaling _ -> false)

    let upscalings = all |> List.filter (fun m -> match m.Build with Upscaling _ -> true | Merge _ -> false)

    let private key (name: string) = name.Trim().ToLowerInvariant().Replace('_', '-')

    let tryFind (name: string) =
        let k = key name
        all |> List.tryFind (fun m -> m.Name = k || List.contains k m.Aliases)

    let private flag (text: string) =
        match text.Trim().ToLowerInvariant() with
        | "true" | "1" | "yes" | "on" -> Some true
        | "false" | "0" | "no" | "off" -> Some false
        | _ -> None

    let private number (text: string) =
        match Double.TryParse(text.Trim(), NumberStyles.Float, inv) with
        | true, x when Double.IsFinite x -> Some x
        | _ -> None

    /// The typed value of `text` for parameter `param`, or the one-line problem.
    let private parseValue (param: MethodParam) (text: string) : Result<obj, string> =
        let bad (why: string) = Error $"parameter '{param.Name}': {why}"
        match param.Type with
        | Number range ->
            match number text with
            | None -> bad $"'{text}' is not a number"
            | Some x when not (range.Contains x) -> bad $"""{x.ToString("R", inv)} is outside {range.Text}"""
            | Some x -> Ok(box x)
        | Integer (low, high) ->
            match Int64.TryParse(text.Trim(), NumberStyles.Integer, inv) with
            | true, n when n >= low && n <= high -> Ok(box n)
            | true, n -> bad $"{n} is outside [{low}, {high}]"
            | _ -> bad $"'{text}' is not an integer"
        | Choice options ->
            let t = text.Trim().ToLowerInvariant()
            if List.contains t options then Ok(box t)
            else bad $"""'{text}' is not one of {String.Join(", ", options)}"""
        | Numbers ->
            let parts = text.Split([| ','; ' ' |], StringSplitOptions.RemoveEmptyEntries) |> List.ofArray
            match parts |> List.tryFind (number >> Option.isNone) with
            | Some w -> bad $"'{w}' is not a number"
            | None when parts.IsEmpty -> bad "no numbers given"
            | None -> Ok(box (parts |> List.map (number >> Option.get)))
        | Words ->
            let parts = text.Split(',', StringSplitOptions.RemoveEmptyEntries ||| StringSplitOptions.TrimEntries) |> List.ofArray
            if parts.IsEmpty then bad "no values given" else Ok(box parts)
        | Flag ->
            match flag text with
            | Some b -> Ok(box b)
            | None -> bad $"'{text}' is not true or false"
        | Text _ -> Ok(box text)

    let parse (``method``: MergeMethod) (settings: Map<string, string>) : Result<MethodArgs, string> =
        let m = ``method``
        let known = m.Parameters |> List.map (fun q -> q.Name)
        let fail (msg: string) = Error $"method '{m.Name}': {msg}"
        match settings |> Map.toList |> List.tryFind (fun (k, _) -> not (List.contains k known)) with
        | Some (k, _) ->
            let takes = if known.IsEmpty then "takes no parameters" else $"""takes {String.Join(", ", known)}"""
            Error $"method '{m.Name}' has no parameter '{k}' ({takes})"
        | None ->
            let folder (acc: Result<Map<string, string * obj>, string>) (q: MethodParam) =
                match acc with
                | Error e -> Error e
                | Ok values ->
                    let text =
                        match settings.TryFind q.Name, q.Default with
                        | Some t, _ -> Ok(Some t)
                        | None, DefaultsTo d -> Ok(Some d)
                        | None, Optional _ -> Ok None
                        | None, Required -> Error $"parameter '{q.Name}' is required ({q.Help})"
                    match text with
                    | Error e -> fail e
                    | Ok None -> Ok values
                    | Ok (Some t) ->
                        match parseValue q t with
                        | Ok v -> Ok(values.Add(q.Name, (t.Trim(), v)))
                        | Error e -> fail e
            match m.Parameters |> List.fold folder (Ok Map.empty) with
            | Error e -> Error e
            | Ok values ->
                let args = MethodArgs(m.Name, values, settings |> Map.keys |> Set.ofSeq)
                match m.Constraint args with
                | Some problem -> fail problem
                | None -> Ok args

    let private unknown (name: string) =
        Error $"""unknown method '{name}' (known: {String.Join(", ", names)})"""

    let resolve (name: string) (settings: Map<string, string>) : Result<ResolvedMethod, string> =
        match tryFind name with
        | None -> unknown name
        | Some m ->
            match parse m settings with
            | Error e -> Error e
            | Ok args ->
                try
                    let built =
                        match m.Build with
                        | Merge build ->
                            let recipe = build args
                            // The seed is an executor option; recording it keeps the merge reproducible from its metadata.
                            let seed = if args.IsGiven "seed" then [ "seed", string (args.Integer "seed") ] else []
                            let ps = [ for kv in recipe.Parameters -> kv.Key, kv.Value ] @ seed
                            BuiltMerge(recipe |> Recipe.named recipe.Name ps)
                        | Upscaling build -> BuiltUpscaling(build args)
                    Ok { Method = m; Args = args; Build = built }
                with :? ArgumentException as e ->
                    Error $"method '{m.Name}': {e.Message}"

    let byName (name: string) (parameters: Map<string, string>) : Result<MergeRecipe, string> =
        match resolve name parameters with
        | Ok { Build = BuiltMerge recipe } -> Ok recipe
        | Ok { Method = m } -> Error $"method '{m.Name}' upscales to a mixture of experts; it is not a static merge recipe"
        | Error e -> Error e

    let recipe (name: string) (settings: Collections.Generic.IReadOnlyDictionary<string, string>) : MergeRecipe =
        match byName name (settings |> Seq.map (fun kv -> kv.Key, kv.Value) |> Map.ofSeq) with
        | Ok r -> r
        | Error e -> raise (ArgumentException e)

    let checkModels (``method``: MergeMethod) (models: int) : Result<unit, string> =
        let m = ``method``
        match m.Models with
        | AtLeast n when models < n -> Error $"{m.Name} takes at least {n} model(s), got {models}"
        | Exactly n when models <> n -> Error $"{m.Name} takes exactly {n} models, got {models}"
        | _ -> Ok()

    let private typeText =
        function
        | Number r -> $"number in {r.Text}"
        | Integer (lo, hi) when lo = Int64.MinValue -> "integer"
        | Integer (lo, hi) -> $"integer in [{lo}, {hi}]"
        | Choice os -> String.Join(" \\| ", os)
        | Numbers -> "numbers, comma-separated"
        | Words -> "words, comma-separated"
        | Flag -> "true \\| false"
        | Text accepts -> accepts.Replace("|", "\\|")

    let private defaultText =
        function
        | Required -> "required"
        | Optional meaning -> $"({meaning})"
        | DefaultsTo v -> $"`{v}`"

    let markdownTable () =
        let lines =
            [ yield "| method | aliases | models | parameter | accepts | default | meaning |"
              yield "|---|---|---|---|---|---|---|"
              for m in all do
                  let aliases = if m.Aliases.IsEmpty then "–" else String.Join(", ", m.Aliases |> List.map (fun a -> $"`{a}`"))
                  let models = match m.Models with AtLeast n -> $"≥ {n}" | Exactly n -> $"{n}"
                  let head = $"| `{m.Name}` | {aliases} | {models} "
                  match m.Parameters with
                  | [] -> yield head + $"| – | – | – | {m.Summary} |"
                  | ps ->
                      yield head + $"| | | | {m.Summary} |"
                      for q in ps do
                          yield $"| | | | `{q.Name}` | {typeText q.Type} | {defaultText q.Default} | {q.Help} |" ]
        String.Join("\n", lines) + "\n"
