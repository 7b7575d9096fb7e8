namespace MergeDsl

open System
open System.Globalization
open System.IO
open System.Text.RegularExpressions
open YamlDotNet.Core
open YamlDotNet.RepresentationModel
open MergeDsl.Core.Ir

/// A parameter value as written: mergekit's ScalarOrGradient, or a list of filtered values.
type internal Setting =
    | Num of float
    | Flag of bool
    | Gradient of float list
    /// (filter, value): the first entry whose filter is absent, "*", or a substring of the tensor name decides.
    | Filtered of (string option * Setting) list

/// One entry of `models`.
type internal ModelEntry =
    { Path: string
      Line: int
      Parameters: Map<string, Setting> }

/// One source of a slice: layers [First, Last) of a model, with its own parameters.
type internal SliceSource =
    { Source: ModelEntry
      First: int
      Last: int }

/// One entry of `slices`: sources of equal length merged with the config's method, layer by layer.
type internal SliceDef =
    { Line: int
      Sources: SliceSource list
      Parameters: Map<string, Setting>
      /// The slice's own `base_model` (full path), which replaces the top-level one for its tensors (mergekit's ConfigReader).
      BaseModel: string option }

type MergekitTokenizerSource =
    | BaseTokenizer
    | UnionTokenizer
    | ModelTokenizer of path: string

type MergekitTokenSource =
    | TokenOfModel of model: string
    | TokenIdOfModel of model: string * id: int
    | OtherTokenOfModel of model: string * token: string
    | ZeroRow

type MergekitTokenSetting =
    { Token: string
      Source: MergekitTokenSource
      Force: bool }

type MergekitTokenizer =
    { Source: MergekitTokenizerSource
      PadToMultipleOf: int option
      Tokens: MergekitTokenSetting list }

type MergekitLayerRange =
    { Model: string
      First: int
      Last: int
      Line: int }

[<Sealed>]
type MergekitConfig
    internal
    (
        file: string,
        methodName: string,
        baseModel: string option,
        models: ModelEntry list,
        globals: Map<string, Setting>,
        outDType: string option,
        slices: SliceDef list,
        extras: MergekitTokenizer option * string option
    ) =
    member _.File = file
    member _.Method = methodName
    member _.Base = baseModel
    member _.Models = models |> List.map (fun m -> m.Path)
    member internal _.Entries = models
    member internal _.Globals = globals
    member _.OutDType = outDType
    member internal _.Slices = slices
    member _.Tokenizer = fst extras
    member _.ChatTemplate = snd extras

    member _.LayerRanges =
        [ for s in slices do
              for src in s.Sources -> { Model = src.Source.Path; First = src.First; Last = src.Last; Line = src.Source.Line } ]

    member _.OutputLayers =
        match slices with
        | [] -> None
        | _ -> Some(slices |> List.sumBy (fun s -> s.Sources.Head.Last - s.Sources.Head.First))

    member _.UsesLayers =
        let rec grad s =
            match s with
            | Gradient _ -> true
            | Filtered cs -> cs |> List.exists (snd >> grad)
            | _ -> false
        // Slices interpolate gradients over each slice's own layers, whatever the models' depth.
        slices.IsEmpty
        && (Seq.exists grad globals.Values
            || models |> List.exists (fun m -> Seq.exists grad m.Parameters.Values))


/// What a parameter accepts.
type private Kind =
    | Real of NumberRange
    | Boolean

type private Param =
    { Name: string
      Kind: Kind
      /// None: required.
      Default: Setting option }

/// How a task-arithmetic-family method sparsifies.
type private Sparsification =
    | Magnitude
    | Random
    | Outliers
    | MagPrune

type private Family =
    | Linear
    | Gta of consensus: bool * sparsification: Sparsification option
    | SlerpMethod
    | ModelStockMethod
    | PassthroughMethod
    /// The methods that combine whole tensors (Recipe.nuslerpWith, multislerp, karcher, sce, nearswap, arceeFusion).
    | NuSlerpMethod
    | MultiSlerpMethod
    | KarcherMethod
    | SceMethod
    | NearSwapMethod
    | ArceeFusionMethod

type private MethodSpec =
    { Name: string
      Family: Family
      /// Parameters only the top-level `parameters` may set.
      Global: Param list
      /// Parameters of each model (also settable at the top level, as defaults for every model).
      PerModel: Param list }

/// A parameter's value for one class of tensors.
type private Value =
    | N of float
    | B of bool

/// A recipe term: built once, rendered both as a recipe value and as F# text.
type private Term =
    | TBase
    | TExperts
    | TTaskVectors of Term
    | TPick of int * Term
    | TStackOf of Term list
    | TWithBase of Term
    | TSparsify of Spars * Term
    | TElect of Term
    | TScale of float * Term
    | TSum of Term
    | TWeighted of float list * Term
    | TDisjointWeighted of float list * Term
    | TAddToBase of Term
    | TSlerp of float * Term
    | TModelStock of Term
    | TPassthrough of Term
    /// value, reference: mergekit's L1 rescale of a sparsified task vector.
    | TRescaleL1 of Term * Term
    | TCombine of Comb * Term
    /// Inputs read `offset` layers further on (slices).
    | TShift of int * Term
    /// Task vectors against another origin than the base (a slice's own base_model).
    | TTaskVectorsFrom of origin: Term * Term
    /// x added to another origin than the base (a slice's own base_model).
    | TAddTo of origin: Term * Term

and private Spars =
    | STopK of float
    | SDare of float * Rescale
    | SBreadcrumbs of float * float
    /// mergekit's DELLA ranking (dim 1), no ÷p (the L1 rescale is a TRescaleL1).
    | SDella of float * float

and private Comb =
    | CNuSlerp of float * float * rowWise: bool * flatten: bool
    | CMultiSlerp of float list * normalize: bool * eps: float
    | CKarcher of maxIter: int * tol: float
    | CSce of float
    | CNearSwap of float
    | CArceeFusion

/// A class of tensor names that every setting evaluates alike: the layer (None outside the
/// layers) and the exact set of filter strings the name contains.
type private Cell = { Layer: int option; Filters: Set<string> }

[<RequireQualifiedAccess>]
module MergekitConfig =
    let private num (x: float) = x.ToString("R", CultureInfo.InvariantCulture)

    let private real name range def = { Name = name; Kind = Real range; Default = def |> Option.map Num }
    let private flag name def = { Name = name; Kind = Boolean; Default = Some(Flag def) }

    let private gta name consensus sparsification normalize rescale =
        { Name = name
          Family = Gta(consensus, sparsification)
          Global =
            [ flag "int8_mask" false
              flag "normalize" normalize
              flag "rescale" rescale
              real "lambda" NumberRange.Finite (Some 1.0) ]
          PerModel =
            [ yield real "weight" NumberRange.Finite None
              yield real "density" NumberRange.Fraction (Some 1.0)
              if sparsification = Some Outliers then yield real "gamma" NumberRange.Proper (Some 0.01)
              if sparsification = Some MagPrune then yield real "epsilon" NumberRange.NonNegative (Some 0.15) ] }

    // mergekit's defaults (mergekit/merge_methods/registry.py): normalize and rescale per method.
    let private positive = { NumberRange.NonNegative with LowIncluded = false }

    let private methods =
        [ { Name = "linear"; Family = Linear; Global = [ flag "normalize" true ]; PerModel = [ real "weight" NumberRange.Finite None ] }
          gta "task_arithmetic" false None false false
          gta "ties" true (Some Magnitude) true false
          gta "dare_ties" true (Some Random) false true
          gta "dare_linear" false (Some Random) false true
          gta "breadcrumbs" false (Some Outliers) false false
          gta "breadcrumbs_ties" true (Some Outliers) false false
          gta "della" true (Some MagPrune) true true
          gta "della_linear" false (Some MagPrune) false true
          { Name = "slerp"; Family = SlerpMethod; Global = [ real "t" NumberRange.Unit None ]; PerModel = [] }
          { Name = "model_stock"; Family = ModelStockMethod; Global = [ flag "filter_wise" false ]; PerModel = [] }
          { Name = "passthrough"; Family = PassthroughMethod; Global = []; PerModel = [ real "scale" NumberRange.Finite (Some 1.0) ] }
          // mergekit/merge_methods/{nuslerp,multislerp,karcher,sce,nearswap,arcee_fusion}.py
          { Name = "nuslerp"; Family = NuSlerpMethod
            Global = [ flag "nuslerp_row_wise" false; flag "nuslerp_flatten" true ]
            PerModel = [ real "weight" NumberRange.Finite None ] }
          { Name = "multislerp"; Family = MultiSlerpMethod
            Global = [ flag "normalize_weights" true; real "eps" positive (Some 1e-8) ]
            PerModel = [ real "weight" NumberRange.Finite None ] }
          { Name = "karcher"; Family = KarcherMethod
            Global = [ real "max_iter" { NumberRange.NonNegative with Low = 1.0 } (Some 10.0); real "tol" positive (Some 1e-5) ]
            PerModel = [] }
          { Name = "sce"; Family = SceMethod; Global = [ flag "int8_mask" false; real "select_topk" NumberRange.Unit (Some 1.0) ]; PerModel = [] }
          { Name = "nearswap"; Family = NearSwapMethod; Global = [ real "t" NumberRange.NonNegative None ]; PerModel = [] }
          { Name = "arcee_fusion"; Family = ArceeFusionMethod; Global = []; PerModel = [] } ]

    let supportedMethods = methods |> List.map (fun m -> m.Name)

    let private supportedText = String.Join(", ", supportedMethods)

    let private laterMethods = [ "ram" ]

    // ---------------------------------------------------------------- parsing

    let private fail file node msg : 'a = YamlConfigText.fail file node msg
    let private scalarText = YamlConfigText.scalar
    let private parseNumber = YamlConfigText.number

    let private parseBool file what (node: YamlNode) =
        match node with
        | :? YamlScalarNode as s ->
            match (if isNull s.Value then "" else s.Value.ToLowerInvariant()) with
            | "true" | "yes" | "on" -> true
            | "false" | "no" | "off" -> false
            | v -> fail file node $"{what}: '{v}' is not true or false"
        | _ -> fail file node $"{what}: expected true or false"

    let private checkRange file what (node: YamlNode) (range: NumberRange) (x: float) =
        if not (range.Contains x) then fail file node $"{what}: {num x} is outside {range.Text}"
        x

    let private entries (m: YamlMappingNode) =
        [ for kv in m.Children -> kv.Key, kv.Value ]

    let private keyText file (key: YamlNode) = scalarText file "key" key

    /// A number or a gradient (list of numbers).
    let private numberOrGradient file what range (node: YamlNode) =
        match node with
        | :? YamlScalarNode -> Num(checkRange file what node range (parseNumber file what node))
        | :? YamlSequenceNode as s when s.Children.Count > 0 && s.Children |> Seq.forall (fun c -> c :? YamlScalarNode) ->
            Gradient [ for c in s.Children -> checkRange file what c range (parseNumber file what c) ]
        | :? YamlSequenceNode as s when s.Children.Count = 0 -> fail file node $"{what}: an empty gradient"
        | _ -> fail file node $"{what}: expected a number or a list of numbers"

    let private conditional file what range (node: YamlNode) =
        match node with
        | :? YamlMappingNode as m ->
            let mutable filter = None
            let mutable value = None
            for k, v in entries m do
                match keyText file k with
                | "filter" -> filter <- Some(scalarText file $"{what}.filter" v)
                | "value" -> value <- Some(numberOrGradient file $"{what}.value" range v)
                | other -> fail file k $"{what}: unknown key '{other}' (a filtered value has 'filter' and 'value')"
            match value with
            | Some v -> filter, v
            | None -> fail file node $"{what}: a filtered value needs 'value'"
        | _ -> fail file node $"{what}: expected a mapping with 'filter' and 'value'"

    let private setting file what (p: Param) (node: YamlNode) =
        match p.Kind with
        | Boolean -> Flag(parseBool file what node)
        | Real range ->
            match node with
            | :? YamlMappingNode -> Filtered [ conditional file what range node ]
            | :? YamlSequenceNode as s when s.Children |> Seq.exists (fun c -> c :? YamlMappingNode) ->
                Filtered [ for c in s.Children -> conditional file what range c ]
            | _ -> numberOrGradient file what range node

    let private parameters file (where: string) (allowed: Param list) (others: Param list) (node: YamlNode) =
        match node with
        | :? YamlMappingNode as m ->
            let mutable result = Map.empty
            for k, v in entries m do
                let name = keyText file k
                match allowed |> List.tryFind (fun p -> p.Name = name) with
                | Some p -> result <- result.Add(name, setting file $"{where}.{name}" p v)
                | None when others |> List.exists (fun p -> p.Name = name) ->
                    fail file k $"{where}: '{name}' applies to the whole merge; set it under the top-level parameters"
                | None ->
                    let known = String.Join(", ", allowed |> List.map (fun p -> p.Name))
                    fail file k $"{where}: unknown parameter '{name}' (this method takes: {known})"
            result
        | :? YamlScalarNode as s when isNull s.Value || s.Value = "" -> Map.empty
        | _ -> fail file node $"{where}: expected a mapping of parameter names to values"

    /// A model reference: a local folder (next to the YAML first, then in the working directory), else a Hugging
    /// Face repo id in the local hub cache, optionally `model+adapter`; kept as the resolved canonical text.
    let private resolvePath (file: string) (node: YamlNode) (what: string) (text: string) =
        let yamlDir = Path.GetDirectoryName(Path.GetFullPath file)
        try
            MergeDsl.Core.Checkpoints.ModelReference.Resolve(text, [| yamlDir; Directory.GetCurrentDirectory() |]).Canonical
        with :? MergeDsl.Core.Checkpoints.ModelReferenceException as e ->
            fail file node $"{what}: {e.Message}"

    let private dtypeOf file what (node: YamlNode) =
        match (scalarText file what node).ToLowerInvariant() with
        | "float32" | "fp32" | "f32" -> "f32"
        | "float16" | "fp16" | "f16" | "half" -> "f16"
        | "bfloat16" | "bf16" -> "bf16"
        | v -> fail file node $"{what}: unknown dtype '{v}' (expected float32, float16 or bfloat16)"

    let private parseRoot (file: string) (text: string) =
        match YamlConfigText.root file text with
        | :? YamlMappingNode as m -> m
        | n -> fail file n "expected a mapping (merge_method, models, parameters, ...)"

    /// One `tokenizer.tokens` entry: `source` (a model, `{kind: zero}` or `{kind: model_token, model, token_id | token}`)
    /// and `force` (mergekit's TokenEmbeddingConfig; mergekit fails on an entry without a source, so it is required).
    let private tokenSetting file (key: YamlNode) (node: YamlNode) =
        let token = scalarText file "tokenizer.tokens" key
        let what = $"tokenizer.tokens.{token}"
        let modelSource (m: YamlMappingNode) =
            let mutable kind = None
            let mutable model = None
            let mutable id = None
            let mutable other = None
            for k, v in entries m do
                match keyText file k with
                | "kind" -> kind <- Some(scalarText file $"{what}.source.kind" v)
                | "model" -> model <- Some(resolvePath file v $"{what}.source.model" (scalarText file $"{what}.source.model" v))
                | "token_id" ->
                    let x = parseNumber file $"{what}.source.token_id" v
                    if x <> Math.Floor x || x < 0.0 || x > 1e9 then fail file v $"{what}.source.token_id: {num x} is not a token id"
                    id <- Some(int x)
                | "token" -> other <- Some(scalarText file $"{what}.source.token" v)
                | o -> fail file k $"{what}.source: unknown key '{o}' (expected kind, model, token_id, token)"
            match kind, model, id, other with
            | Some "zero", None, None, None -> ZeroRow
            | Some "zero", _, _, _ -> fail file m $"{what}.source: kind zero takes no model, token_id or token"
            | Some "model_token", Some p, Some i, None -> TokenIdOfModel(p, i)
            | Some "model_token", Some p, None, Some t -> OtherTokenOfModel(p, t)
            | Some "model_token", None, _, _ -> fail file m $"{what}.source: kind model_token needs model"
            | Some "model_token", _, _, _ -> fail file m $"{what}.source: kind model_token takes exactly one of token_id and token"
            | Some k, _, _, _ -> fail file m $"{what}.source: unknown kind '{k}' (expected zero or model_token)"
            | None, _, _, _ -> fail file m $"{what}.source: 'kind' is missing (zero or model_token; a model alone is written source: <model>)"
        match node with
        | :? YamlMappingNode as m ->
            let mutable source = None
            let mutable force = false
            for k, v in entries m do
                match keyText file k with
                | "source" ->
                    source <-
                        match v with
                        | :? YamlMappingNode as sm -> Some(modelSource sm)
                        | _ -> Some(TokenOfModel(resolvePath file v $"{what}.source" (scalarText file $"{what}.source" v)))
                | "force" -> force <- parseBool file $"{what}.force" v
                | o -> fail file k $"{what}: unknown key '{o}' (expected source, force)"
            match source with
            | Some s -> { Token = token; Source = s; Force = force }
            | None -> fail file node $"{what}: 'source' is missing (mergekit fails on a token setting without one)"
        | _ -> fail file node $"{what}: expected a mapping with source (and force)"

    /// `tokenizer_source: base | union | <model>`, or the `tokenizer:` block (source, pad_to_multiple_of, tokens),
    /// never both (as mergekit).
    let private parseTokenizer file (simple: (YamlNode * YamlNode) option) (block: (YamlNode * YamlNode) option) =
        let source what (v: YamlNode) =
            match scalarText file what v with
            | "base" -> BaseTokenizer
            | "union" -> UnionTokenizer
            | text -> ModelTokenizer(resolvePath file v what text)
        match simple, block with
        | Some _, Some(k, _) -> fail file k "tokenizer: give either tokenizer_source or tokenizer, not both"
        | Some(_, v), None -> Some { Source = source "tokenizer_source" v; PadToMultipleOf = None; Tokens = [] }
        | None, Some(_, (:? YamlMappingNode as m)) ->
            let mutable src = UnionTokenizer
            let mutable pad = None
            let mutable tokens = []
            for k, v in entries m do
                match keyText file k with
                | "source" -> src <- source "tokenizer.source" v
                | "pad_to_multiple_of" ->
                    let x = parseNumber file "tokenizer.pad_to_multiple_of" v
                    if x <> Math.Floor x || x < 1.0 || x > 1e6 then fail file v $"tokenizer.pad_to_multiple_of: {num x} is not a positive integer"
                    pad <- Some(int x)
                | "tokens" ->
                    match v with
                    | :? YamlMappingNode as tm -> tokens <- [ for tk, tv in entries tm -> tokenSetting file tk tv ]
                    | _ -> fail file v "tokenizer.tokens: expected a mapping of tokens to {source, force}"
                | other -> fail file k $"tokenizer: unknown key '{other}' (expected source, pad_to_multiple_of, tokens)"
            Some { Source = src; PadToMultipleOf = pad; Tokens = tokens }
        | None, Some(_, v) -> fail file v "tokenizer: expected a mapping (source, pad_to_multiple_of, tokens)"
        | None, None -> None

    let private layerRange file what (node: YamlNode) =
        match node with
        | :? YamlSequenceNode as s when s.Children.Count = 2 ->
            let bound (c: YamlNode) =
                let x = parseNumber file what c
                if x <> Math.Floor x || x < 0.0 || x > 1e6 then fail file c $"{what}: '{scalarText file what c}' is not a layer index"
                int x
            let a, b = bound s.Children[0], bound s.Children[1]
            if b <= a then fail file node $"{what}: [{a}, {b}] is empty (the end is exclusive, as in mergekit)"
            a, b
        | _ -> fail file node $"{what}: expected [first, end] (end exclusive)"

    let private parseSlice file (spec: MethodSpec) (i: int) (item: YamlNode) : SliceDef =
        let where = $"slices[{i}]"
        match item with
        | :? YamlMappingNode as m ->
            let mutable sources = None
            let mutable ps = Map.empty
            let mutable sliceBase = None
            for k, v in entries m do
                match keyText file k with
                | "sources" ->
                    match v with
                    | :? YamlSequenceNode as seq when seq.Children.Count > 0 ->
                        sources <-
                            Some
                                [ for j, src in Seq.indexed seq.Children ->
                                      let w = $"{where}.sources[{j}]"
                                      match src with
                                      | :? YamlMappingNode as sm ->
                                          let mutable path = None
                                          let mutable range = None
                                          let mutable sps = Map.empty
                                          for sk, sv in entries sm do
                                              match keyText file sk with
                                              | "model" -> path <- Some(resolvePath file sv $"{w}.model" (scalarText file $"{w}.model" sv))
                                              | "layer_range" -> range <- Some(layerRange file $"{w}.layer_range" sv)
                                              | "parameters" -> sps <- parameters file $"{w}.parameters" spec.PerModel spec.Global sv
                                              | other -> fail file sk $"{w}: unknown key '{other}' (expected model, layer_range, parameters)"
                                          match path, range with
                                          | Some p, Some(a, b) -> { Source = { Path = p; Line = int src.Start.Line; Parameters = sps }; First = a; Last = b }
                                          | None, _ -> fail file src $"{w}: 'model' is missing"
                                          | _, None -> fail file src $"{w}: 'layer_range' is missing"
                                      | _ -> fail file src $"{w}: expected a mapping with 'model' and 'layer_range'" ]
                    | _ -> fail file v $"{where}.sources: expected a list of sources"
                | "parameters" -> ps <- parameters file $"{where}.parameters" (spec.Global @ spec.PerModel) [] v
                | "base_model" -> sliceBase <- Some(resolvePath file v $"{where}.base_model" (scalarText file $"{where}.base_model" v))
                | "residual_weight" ->
                    fail file k $"{where}.residual_weight: mergekit declares this key but never reads it (no effect on its merges); remove it"
                | other -> fail file k $"{where}: unknown key '{other}' (expected sources, base_model, parameters)"
            match sources with
            | None -> fail file item $"{where}: 'sources' is missing"
            | Some srcs ->
                let lengths = srcs |> List.map (fun s -> s.Last - s.First) |> List.distinct
                if lengths.Length > 1 then
                    let got = String.Join(", ", lengths)
                    fail file item $"{where}: every source of a slice must span the same number of layers (got {got})"
                match srcs |> List.countBy (fun s -> s.Source.Path) |> List.tryFind (fun (_, n) -> n > 1) with
                | Some(p, _) -> fail file item $"{where}: model '{p}' is a source twice"
                | None -> ()
                { Line = int item.Start.Line; Sources = srcs; Parameters = ps; BaseModel = sliceBase }
        | _ -> fail file item $"{where}: expected a mapping with 'sources'"

    /// A setting looked up first in `first`, then (where it is absent or its filters all miss) in `fallback`,
    /// as mergekit's ConfigReader does: source parameters, then the slice's, then the top level.
    let private overlay (first: Map<string, Setting>) (fallback: Map<string, Setting>) =
        fallback
        |> Map.fold
            (fun (acc: Map<string, Setting>) k v ->
                match acc.TryFind k with
                | None -> acc.Add(k, v)
                | Some(Filtered cs) -> acc.Add(k, Filtered(cs @ [ None, v ]))
                | Some _ -> acc)
            first

    /// A slices configuration: the base (methods that use one) must be a source of every slice; the
    /// experts are the other sources' models, in order of first appearance.
    let private slicesConfig file (spec: MethodSpec) (baseModel: string option) globals outDType (slices: SliceDef list) extras =
        // A slice's own base_model replaces the top-level one for its tensors (mergekit's ConfigReader.base_model).
        let sliceBase (s: SliceDef) = match s.BaseModel with Some b -> Some b | None -> baseModel
        let usesBase (s: SliceDef) =
            match spec.Family with
            | Linear | PassthroughMethod | KarcherMethod -> false
            | Gta _ | ModelStockMethod | SlerpMethod | SceMethod | NearSwapMethod | ArceeFusionMethod -> true
            | NuSlerpMethod | MultiSlerpMethod -> (sliceBase s).IsSome
        let anyBase = slices |> List.exists usesBase
        let baseUsed = if anyBase then baseModel else None
        for i, s in List.indexed slices do
            let need what = raise (YamlConfigText.YamlConfigError $"{file}:{s.Line}: slices[{i}]: {spec.Name} {what}")
            let effective = if usesBase s then sliceBase s else None
            if usesBase s && effective.IsNone then need "needs base_model (at the top level or in the slice)"
            let others = s.Sources |> List.filter (fun src -> Some src.Source.Path <> effective)
            if usesBase s && others.Length = s.Sources.Length then need "needs its base_model among the sources of the slice"
            if spec.Family = ModelStockMethod && effective <> baseUsed then
                need "with a slice base_model other than the top-level one is not supported (Model Stock reads the top-level base)"
            match spec.Family, others.Length with
            | PassthroughMethod, n when n <> 1 -> need $"takes exactly one source per slice ({n} given)"
            | (SlerpMethod | NearSwapMethod | ArceeFusionMethod), n when n <> 1 -> need $"takes the base model and exactly one other source ({n} others given)"
            | NuSlerpMethod, n when n <> 2 -> need $"takes exactly two sources besides an optional base ({n} given)"
            | KarcherMethod, n when n < 2 -> need $"needs at least two sources ({n} given)"
            | ModelStockMethod, n when n < 2 -> need $"needs at least two sources besides the base ({n} given)"
            | (Gta _ | SceMethod | MultiSlerpMethod), 0 -> need "needs at least one source besides the base"
            | _ -> ()
        // mergekit evaluates per-model parameters against each source's input tensor name and method-wide ones against
        // the output name (plan.py's plan_tensor); MergeDsl's cells see output names. The two names differ only in the
        // layer number, so only a filter with a digit can tell them apart: refused where a source's layers are shifted.
        let rec filtersIn (st: Setting) =
            match st with
            | Filtered cs -> cs |> List.collect (fun (f, v) -> Option.toList f @ filtersIn v)
            | _ -> []
        let digitFilters (m: Map<string, Setting>) =
            spec.PerModel
            |> List.collect (fun p -> m.TryFind p.Name |> Option.map filtersIn |> Option.defaultValue [])
            |> List.filter (Seq.exists Char.IsDigit)
        let mutable start = 0
        for i, s in List.indexed slices do
            for src in s.Sources do
                if src.First <> start then
                    match digitFilters src.Source.Parameters @ digitFilters s.Parameters @ digitFilters globals with
                    | f :: _ ->
                        raise (YamlConfigText.YamlConfigError $"{file}:{src.Source.Line}: slices[{i}]: filter '{f}' of a per-model parameter has a digit: mergekit matches it against the input names (layer {src.First} on), MergeDsl against the output names (layer {start} on), which differ here; use a filter without a layer number")
                    | [] -> ()
            start <- start + (s.Sources.Head.Last - s.Sources.Head.First)
        let experts =
            slices
            |> List.collect (fun s -> s.Sources |> List.map (fun src -> src.Source))
            |> List.filter (fun m -> Some m.Path <> baseUsed)
            |> List.distinctBy (fun m -> m.Path)
            |> List.map (fun m -> { m with Parameters = Map.empty })
        MergekitConfig(file, spec.Name, baseUsed, experts, globals, outDType, slices, extras)

    let private parseConfig (file: string) (text: string) =
        let root = parseRoot file text
        let all = entries root |> List.map (fun (k, v) -> keyText file k, (k, v))
        for name, (k, v) in all do
            match name with
            | "merge_method" | "base_model" | "models" | "slices" | "parameters" | "dtype" | "out_dtype" -> ()
            | "tokenizer_source" | "tokenizer" | "chat_template" | "modules" -> ()
            | "embed_slerp" ->
                fail file k "embed_slerp: not supported: current mergekit has no such key (embeddings are merged by the merge_method on rows aligned to the output vocabulary)"
            | other ->
                fail file k $"unknown key '{other}' (expected merge_method, base_model, models, slices, parameters, dtype, out_dtype, tokenizer_source, tokenizer, chat_template)"
        let find name = all |> List.tryFind (fun (n, _) -> n = name) |> Option.map snd
        // mergekit's `modules`: a single-module architecture (every decoder-only LLM) has one module, 'default', whose
        // slices or models and parameters mean what they mean at the top level (its parameters come between a slice's
        // and the top level's). Multi-module architectures (vision-language models, T5, Whisper) are refused.
        let moduleBody =
            match find "modules" with
            | None -> None
            | Some(k, (:? YamlMappingNode as m)) ->
                if (find "models").IsSome || (find "slices").IsSome then fail file k "modules: give exactly one of models, slices and modules"
                match entries m with
                | [ name, (:? YamlMappingNode as body) ] when keyText file name = "default" ->
                    let inner = entries body |> List.map (fun (k, v) -> keyText file k, (k, v))
                    for n, (bk, _) in inner do
                        if n <> "models" && n <> "slices" && n <> "parameters" then
                            fail file bk $"modules.default: unknown key '{n}' (expected models, slices, parameters)"
                    Some inner
                | [ name, body ] when keyText file name = "default" -> fail file body "modules.default: expected a mapping (models or slices, parameters)"
                | (name, _) :: _ when keyText file name <> "default" ->
                    let n = keyText file name
                    fail file name $"modules: '{n}': multi-module architectures (vision-language models, T5, Whisper) are not supported; a single-module model's only module is 'default'"
                | _ -> fail file k "modules: a single-module model has exactly one module, 'default'"
            | Some(_, v) -> fail file v "modules: expected a mapping with the module 'default'"
        let findBody name =
            match moduleBody with
            | Some inner -> inner |> List.tryFind (fun (n, _) -> n = name) |> Option.map snd
            | None -> find name
        let spec =
            match find "merge_method" with
            | None -> raise (YamlConfigText.YamlConfigError $"{file}: merge_method is missing")
            | Some(_, v) ->
                let name = scalarText file "merge_method" v
                match methods |> List.tryFind (fun m -> m.Name = name) with
                | Some m -> m
                | None when laterMethods |> List.contains name ->
                    fail file v $"merge_method '{name}' is not supported yet (supported: {supportedText})"
                | None -> fail file v $"unknown merge_method '{name}' (supported: {supportedText})"
        let globals =
            match find "parameters" with
            | None -> Map.empty
            | Some(_, v) -> parameters file "parameters" (spec.Global @ spec.PerModel) [] v
        let globals =
            match moduleBody |> Option.bind (List.tryFind (fun (n, _) -> n = "parameters")) with
            | Some(_, (_, v)) -> overlay (parameters file "modules.default.parameters" (spec.Global @ spec.PerModel) [] v) globals
            | None -> globals
        let baseModel = find "base_model" |> Option.map (fun (_, v) -> resolvePath file v "base_model" (scalarText file "base_model" v))
        let models =
            match findBody "models", findBody "slices" with
            | None, None -> raise (YamlConfigText.YamlConfigError $"{file}: models (or slices) is missing")
            | Some _, Some(k, _) -> fail file k "slices: give either models or slices, not both"
            | None, Some _ -> []
            | Some(k, (:? YamlSequenceNode as s)), None when s.Children.Count > 0 ->
                [ for i, item in Seq.indexed s.Children do
                      let where = $"models[{i}]"
                      match item with
                      | :? YamlMappingNode as m ->
                          let mutable path = None
                          let mutable ps = Map.empty
                          for k, v in entries m do
                              match keyText file k with
                              | "model" -> path <- Some(resolvePath file v $"{where}.model" (scalarText file $"{where}.model" v))
                              | "parameters" -> ps <- parameters file $"{where}.parameters" spec.PerModel spec.Global v
                              | other -> fail file k $"{where}: unknown key '{other}' (expected model, parameters)"
                          match path with
                          | Some p -> { Path = p; Line = int item.Start.Line; Parameters = ps }
                          | None -> fail file item $"{where}: 'model' is missing"
                      | _ -> fail file item $"{where}: expected a mapping with 'model' and 'parameters'" ]
            | Some(_, v), None -> fail file v "models: expected a list of models"
        let slices =
            match findBody "slices" with
            | None -> []
            | Some(_, (:? YamlSequenceNode as s)) when s.Children.Count > 0 ->
                [ for i, item in Seq.indexed s.Children -> parseSlice file spec i item ]
            | Some(_, v) -> fail file v "slices: expected a list of slices (each with sources)"
        let outDType =
            match find "out_dtype", find "dtype" with
            | Some(_, v), _ -> Some(dtypeOf file "out_dtype" v)
            | None, Some(_, v) -> Some(dtypeOf file "dtype" v)
            | None, None -> None
        find "dtype" |> Option.iter (fun (_, v) -> dtypeOf file "dtype" v |> ignore)
        let tokenizer = parseTokenizer file (find "tokenizer_source") (find "tokenizer")
        let chatTemplate =
            find "chat_template"
            |> Option.map (fun (_, v) ->
                let text = scalarText file "chat_template" v
                if text <> "auto" && (text.Length < 20 || not (text.Contains '{')) then
                    fail file v $"chat_template: '{text}' is not supported: give 'auto' or the Jinja template text (mergekit's built-in template names are not shipped)"
                text)
        let extras = tokenizer, chatTemplate
        let dupe = models |> List.countBy (fun m -> m.Path) |> List.tryFind (fun (_, n) -> n > 1)
        match dupe with
        | Some(p, _) -> raise (YamlConfigText.YamlConfigError $"{file}: model '{p}' is listed twice")
        | None -> ()
        if not slices.IsEmpty then spec, slicesConfig file spec baseModel globals outDType slices extras
        else
            let isBase (m: ModelEntry) = Some m.Path = baseModel
            let line = models |> List.tryHead |> Option.map (fun m -> m.Line) |> Option.defaultValue 1
            let need what = raise (YamlConfigText.YamlConfigError $"{file}:{line}: {spec.Name} {what}")
            let experts, baseUsed =
                match spec.Family with
                | Linear ->
                    if baseModel.IsSome && not (models |> List.exists isBase) then
                        need "merges only the listed models: list base_model under models with a weight, or remove base_model"
                    models, None
                | Gta _ | ModelStockMethod | SlerpMethod | SceMethod | NearSwapMethod | ArceeFusionMethod ->
                    if baseModel.IsNone then need "needs base_model"
                    models |> List.filter (isBase >> not), baseModel
                | NuSlerpMethod | MultiSlerpMethod -> models |> List.filter (isBase >> not), baseModel
                | KarcherMethod ->
                    // mergekit averages every input, the base included (listed or not).
                    let listed = models |> List.exists isBase
                    match baseModel with
                    | Some b when not listed -> { Path = b; Line = line; Parameters = Map.empty } :: models, None
                    | _ -> models, None
                | PassthroughMethod ->
                    if models.Length <> 1 then need $"takes exactly one model ({models.Length} given)"
                    models, None
            match spec.Family, experts.Length with
            | (SlerpMethod | NearSwapMethod | ArceeFusionMethod), n when n <> 1 -> need $"takes the base model and exactly one other model ({n} others given)"
            | NuSlerpMethod, n when n <> 2 -> need $"takes exactly two models besides an optional base ({n} given)"
            | (SceMethod | MultiSlerpMethod), 0 -> need "needs at least one model besides the base"
            | KarcherMethod, n when n < 2 -> need $"needs at least two models ({n} given)"
            | ModelStockMethod, n when n < 2 -> need $"needs at least two models besides the base ({n} given)"
            | (Gta _ | Linear), 0 -> need "needs at least one model besides the base"
            | _ -> ()
            spec, MergekitConfig(file, spec.Name, baseUsed, experts, globals, outDType, [], extras)

    let parse (file: string) (text: string) =
        try
            Ok(snd (parseConfig file text))
        with YamlConfigText.YamlConfigError msg ->
            Error msg

    let load (file: string) =
        if not (File.Exists file) then Error $"{file}: no such configuration file"
        else
            // A config is the user's own small text file, not a model file.
            let info = FileInfo file
            if info.Length > 1_000_000L then Error $"{file}: too large for a merge configuration ({info.Length} bytes)"
            else parse file (File.ReadAllText file)

    // ---------------------------------------------------------------- evaluation

    let interpolate (anchors: float list) (t: float) =
        let a = Array.ofList anchors
        let scaled = t * float (a.Length - 1)
        let i0 = int scaled
        let i1 = min (a.Length - 1) (i0 + 1)
        let frac = scaled - float i0
        (1.0 - frac) * a[i0] + frac * a[i1]

    let layerT (layerCount: int) (layer: int option) =
        match layer with
        | None -> 0.0
        | Some i -> if layerCount > 1 then float i / float (layerCount - 1) else 1.0

    let rec private evaluate (cell: Cell) (t: float) (s: Setting) : Value option =
        match s with
        | Num x -> Some(N x)
        | Flag b -> Some(B b)
        | Gradient xs -> Some(N(interpolate xs t))
        | Filtered conds ->
            conds
            |> List.tryFind (fun (f, _) ->
                match f with
                | None -> true
                | Some f when f = "*" || f = "" -> true
                | Some f -> cell.Filters.Contains f)
            |> Option.bind (fun (_, v) -> evaluate cell t v)

    let private filtersOf (config: MergekitConfig) =
        let rec fs s =
            match s with
            | Filtered cs -> cs |> List.collect (fun (f, v) -> (match f with Some f when f <> "*" && f <> "" -> [ f ] | _ -> []) @ fs v)
            | _ -> []
        (Seq.toList config.Globals.Values
         @ (config.Entries |> List.collect (fun m -> Seq.toList m.Parameters.Values))
         @ (config.Slices |> List.collect (fun s -> Seq.toList s.Parameters.Values @ (s.Sources |> List.collect (fun src -> Seq.toList src.Source.Parameters.Values)))))
        |> List.collect fs
        |> List.distinct

    let private cellText (cell: Cell) =
        let layer = match cell.Layer with Some i -> $"layer {i}" | None -> "tensors outside the layers"
        if cell.Filters.IsEmpty then layer else $"""{layer} matching {String.Join(", ", cell.Filters)}"""

    let private sparsifierOf (s: Spars) : Sparsifier =
        match s with
        | STopK d -> Recipe.topKRounded Floor d
        | SDare(d, r) -> Recipe.bernoulliWith r d
        | SBreadcrumbs(d, g) -> Recipe.breadcrumbsRounded Floor d g
        | SDella(d, e) -> Recipe.dellaMergekit d e

    /// The recipe term of one cell.
    let private termOf (file: string) (spec: MethodSpec) (config: MergekitConfig) (layerCount: int) (cell: Cell) =
        let t = layerT layerCount cell.Layer
        let fail msg = raise (YamlConfigText.YamlConfigError $"{file}: {msg} ({cellText cell})")
        let globalValue (p: Param) =
            match config.Globals.TryFind p.Name |> Option.bind (evaluate cell t) with
            | Some v -> v
            | None ->
                match p.Default |> Option.bind (evaluate cell t) with
                | Some v -> v
                | None -> fail $"parameter '{p.Name}' has no value"
        let modelValue (m: ModelEntry) (p: Param) =
            let given =
                match m.Parameters.TryFind p.Name |> Option.bind (evaluate cell t) with
                | Some v -> Some v
                | None -> config.Globals.TryFind p.Name |> Option.bind (evaluate cell t)
            match given with
            | Some v -> v
            | None ->
                match p.Default |> Option.bind (evaluate cell t) with
                | Some v -> v
                | None -> fail $"model '{m.Path}' has no '{p.Name}'"
        let number v = match v with N x -> x | B b -> if b then 1.0 else 0.0
        let boolean v = match v with B b -> b | N x -> x <> 0.0
        let g name = globalValue (spec.Global |> List.find (fun p -> p.Name = name))
        let per name = config.Entries |> List.map (fun m -> modelValue m (spec.PerModel |> List.find (fun p -> p.Name = name)) |> number)
        match spec.Family with
        | Linear ->
            let ws = per "weight"
            if boolean (g "normalize") then
                let total = List.sum ws
                if total = 0.0 then fail "the weights sum to 0 and normalize is on"
                TWeighted(ws |> List.map (fun w -> w / total), TExperts)
            else TWeighted(ws, TExperts)
        | Gta(consensus, sparsification) ->
            let ws = per "weight"
            let normalize = boolean (g "normalize")
            let rescale = boolean (g "rescale")
            let lambda = number (g "lambda")
            let n = ws.Length
            let sparsifiers =
                match sparsification with
                | None -> List.replicate n None
                | Some kind ->
                    let ds = per "density"
                    [ for i in 0 .. n - 1 ->
                          let d = ds[i]
                          match kind with
                          | Magnitude -> Some(STopK d)
                          | Random -> Some(SDare(d, (if rescale then L1 else NoRescale)))
                          | Outliers -> Some(SBreadcrumbs(d, (per "gamma")[i]))
                          | MagPrune ->
                              let e = (per "epsilon")[i]
                              if d < 1.0 && not (d - e > 0.0 && d + e < 1.0) then
                                  fail $"density ± epsilon must stay inside (0, 1) (density {num d}, epsilon {num e})"
                              Some(SDella(d, e)) ]
            // mergekit rescales top-k, breadcrumbs and DELLA survivors to the task vector's L1 norm
            // (rescaled_masked_tensor); DARE's L1 rescale is part of its sparsifier. Density 1 is the identity.
            let sparsifyTerm (s: Spars) (x: Term) =
                let pruned = TSparsify(s, x)
                match s with
                | STopK d | SBreadcrumbs(d, _) | SDella(d, _) when rescale && d < 1.0 -> TRescaleL1(pruned, x)
                | _ -> pruned
            let tv = TTaskVectors TExperts
            let sparsified, perItem =
                match List.distinct sparsifiers with
                | [ None ] -> tv, false
                | [ Some s ] -> sparsifyTerm s tv, false
                | _ -> tv, true
            let stack =
                if not perItem && ws |> List.forall ((=) 1.0) then sparsified
                else
                    TStackOf
                        [ for i in 0 .. n - 1 ->
                              let item = TPick(i, sparsified)
                              let item = if perItem then (match sparsifiers[i] with Some s -> sparsifyTerm s item | None -> item) else item
                              if ws[i] = 1.0 then item else TScale(ws[i], item) ]
            let mixed =
                if consensus then
                    let elected = TElect stack
                    if normalize then TDisjointWeighted(ws, elected) else TSum elected
                else
                    let total = List.sum ws
                    if normalize && abs total >= 1e-8 && total <> 1.0 then TScale(1.0 / total, TSum stack) else TSum stack
            TAddToBase(if lambda = 1.0 then mixed else TScale(lambda, mixed))
        | SlerpMethod -> TSlerp(number (g "t"), TWithBase TExperts)
        | ModelStockMethod ->
            if boolean (g "filter_wise") then fail "filter_wise: true is not supported yet"
            TModelStock TExperts
        | PassthroughMethod ->
            let s = (per "scale")[0]
            if s = 1.0 then TPassthrough(TPick(0, TExperts)) else TScale(s, TPick(0, TExperts))
        | NuSlerpMethod ->
            let ws = per "weight"
            let c = CNuSlerp(ws[0], ws[1], boolean (g "nuslerp_row_wise"), boolean (g "nuslerp_flatten"))
            if config.Base.IsSome then TAddToBase(TCombine(c, TTaskVectors TExperts)) else TCombine(c, TExperts)
        | MultiSlerpMethod ->
            let ws = per "weight"
            let normalize = boolean (g "normalize_weights")
            if normalize && List.sum ws = 0.0 then fail "the weights sum to 0 and normalize_weights is on"
            let c = CMultiSlerp(ws, normalize, number (g "eps"))
            if config.Base.IsSome then TAddToBase(TCombine(c, TTaskVectors TExperts)) else TCombine(c, TExperts)
        | KarcherMethod ->
            let maxIter = number (g "max_iter")
            if maxIter <> floor maxIter then fail $"max_iter: {num maxIter} is not a whole number"
            TCombine(CKarcher(int maxIter, number (g "tol")), TExperts)
        | SceMethod -> TAddToBase(TCombine(CSce(number (g "select_topk")), TTaskVectors TExperts))
        | NearSwapMethod -> TCombine(CNearSwap(number (g "t")), TWithBase TExperts)
        | ArceeFusionMethod -> TCombine(CArceeFusion, TWithBase TExperts)

    // ---------------------------------------------------------------- terms to recipes and text

    let private combinerOf (c: Comb) : Stack -> Tensor =
        let k = Recipe.constant
        match c with
        | CNuSlerp(w0, w1, rowWise, flatten) -> Recipe.nuslerpWith (k w0, k w1) rowWise flatten
        | CMultiSlerp(ws, normalize, eps) -> Recipe.multislerpWith normalize eps (ws |> List.map k)
        | CKarcher(maxIter, tol) -> Recipe.karcher maxIter tol
        | CSce x -> Recipe.sce (k x)
        | CNearSwap t -> Recipe.nearswap (k t)
        | CArceeFusion -> Recipe.arceeFusion

    let rec private tensor (t: Term) : Tensor =
        match t with
        | TBase -> Recipe.baseModel
        | TPick(i, s) -> stack s |> Recipe.pick i
        | TSparsify(sp, x) -> tensor x |> Recipe.sparsify (sparsifierOf sp)
        | TScale(f, x) -> tensor x |> Recipe.scale f
        | TSum s -> stack s |> Recipe.sum
        | TWeighted(ws, s) -> stack s |> Recipe.weighted ws
        | TDisjointWeighted(ws, s) -> stack s |> Recipe.disjointWeightedMean ws
        | TAddToBase x -> tensor x |> Recipe.addTo Recipe.baseModel
        | TSlerp(v, s) -> stack s |> Recipe.slerp v
        | TModelStock s -> stack s |> Recipe.modelStock
        | TPassthrough x -> tensor x |> Recipe.passthrough
        | TRescaleL1(x, r) -> tensor x |> Recipe.rescaleL1 (tensor r)
        | TCombine(c, s) -> stack s |> combinerOf c
        | TShift(d, x) -> tensor x |> Recipe.shiftLayers d
        | TAddTo(o, x) -> tensor x |> Recipe.addTo (tensor o)
        | _ -> invalidOp $"not a tensor term: {t}"

    and private stack (t: Term) : Stack =
        match t with
        | TExperts -> Recipe.experts
        | TTaskVectors s -> stack s |> Recipe.taskVectors
        | TStackOf items -> Recipe.stackOf (items |> List.map tensor)
        | TWithBase s -> stack s |> Recipe.withBase
        | TSparsify(sp, x) -> stack x |> Recipe.sparsify (sparsifierOf sp)
        | TElect s -> stack s |> Recipe.electSignWith Mass PositiveSign
        | TScale(f, x) -> stack x |> Recipe.scale f
        | TRescaleL1(x, r) -> stack x |> Recipe.rescaleL1 (stack r)
        | TShift(d, x) -> stack x |> Recipe.shiftLayers d
        | TTaskVectorsFrom(o, x) -> stack x |> Recipe.taskVectorsFrom (tensor o)
        | _ -> invalidOp $"not a stack term: {t}"

    let private fnum (x: float) =
        let s = num x
        let s = if s.Contains '.' || s.Contains 'E' || s.Contains "Infinity" || s = "NaN" then s else s + ".0"
        if x < 0.0 then $"({s})" else s

    let private floats (xs: float list) = "[ " + String.Join("; ", xs |> List.map fnum) + " ]"

    let private sparsText (s: Spars) =
        match s with
        | STopK d -> $"Recipe.topKRounded Floor {fnum d}"
        | SDare(d, r) -> $"""Recipe.bernoulliWith {(match r with L1 -> "L1" | NoRescale -> "NoRescale" | Inverse -> "Inverse")} {fnum d}"""
        | SBreadcrumbs(d, g) -> $"Recipe.breadcrumbsRounded Floor {fnum d} {fnum g}"
        | SDella(d, e) -> $"Recipe.dellaMergekit {fnum d} {fnum e}"

    let private combText (c: Comb) =
        let k x = $"(Recipe.constant {fnum x})"
        let b x = if x then "true" else "false"
        match c with
        | CNuSlerp(w0, w1, rowWise, flatten) -> $"Recipe.nuslerpWith ({k w0}, {k w1}) {b rowWise} {b flatten}"
        | CMultiSlerp(ws, normalize, eps) ->
            $"""Recipe.multislerpWith {b normalize} {fnum eps} [ {String.Join("; ", ws |> List.map k)} ]"""
        | CKarcher(maxIter, tol) -> $"Recipe.karcher {maxIter} {fnum tol}"
        | CSce x -> $"Recipe.sce {k x}"
        | CNearSwap t -> $"Recipe.nearswap {k t}"
        | CArceeFusion -> "Recipe.arceeFusion"

    /// Lines of a pipeline: the source first, then one `|> step` per line.
    let rec private lines (t: Term) : string list =
        let step x s = lines x @ [ "|> " + s ]
        match t with
        | TBase -> [ "Recipe.baseModel" ]
        | TExperts -> [ "Recipe.experts" ]
        | TTaskVectors x -> step x "Recipe.taskVectors"
        | TPick(i, x) -> step x $"Recipe.pick {i}"
        | TStackOf items -> [ "Recipe.stackOf [ " + String.Join("; ", items |> List.map (fun i -> "(" + String.Join(" ", lines i) + ")")) + " ]" ]
        | TWithBase x -> step x "Recipe.withBase"
        | TSparsify(s, x) -> step x $"Recipe.sparsify ({sparsText s})"
        | TElect x -> step x "Recipe.electSignWith Mass PositiveSign"
        | TScale(f, x) -> step x $"Recipe.scale {fnum f}"
        | TSum x -> step x "Recipe.sum"
        | TWeighted(ws, x) -> step x $"Recipe.weighted {floats ws}"
        | TDisjointWeighted(ws, x) -> step x $"Recipe.disjointWeightedMean {floats ws}"
        | TAddToBase x -> step x "Recipe.addTo Recipe.baseModel"
        | TSlerp(v, x) -> step x $"Recipe.slerp {fnum v}"
        | TModelStock x -> step x "Recipe.modelStock"
        | TPassthrough x -> step x "Recipe.passthrough"
        | TRescaleL1(x, r) -> step x ("Recipe.rescaleL1 (" + String.Join(" ", lines r) + ")")
        | TCombine(c, x) -> step x (combText c)
        | TShift(d, x) -> step x (if d < 0 then $"Recipe.shiftLayers ({d})" else $"Recipe.shiftLayers {d}")
        | TTaskVectorsFrom(o, x) -> step x ("Recipe.taskVectorsFrom (" + String.Join(" ", lines o) + ")")
        | TAddTo(o, x) -> step x ("Recipe.addTo (" + String.Join(" ", lines o) + ")")

    /// The regex (without "re:") of the names in a cell: the first `.N.` of the name is the layer,
    /// as the compiler's layer index reads it; filters are substrings, as in mergekit.
    let private cellPattern (usesLayers: bool) (filters: string list) (cell: Cell) =
        let lookaheads =
            filters
            |> List.map (fun f -> if cell.Filters.Contains f then $"(?=.*{Regex.Escape f})" else $"(?!.*{Regex.Escape f})")
            |> String.concat ""
        let layer =
            if not usesLayers then ".*"
            else
                match cell.Layer with
                | None -> @"(?!.*\.\d+\.).*"
                | Some i -> $@"(?:(?!\.\d+\.).)*\.{i}\..*"
        lookaheads + layer

    /// The term with the method's base and experts replaced by a slice's (a pick of a listed stack is its item);
    /// `origin` is TBase unless the slice has its own base_model, which is then one of the experts.
    let rec private substitute (origin: Term) (experts: Term) (t: Term) : Term =
        let sub = substitute origin experts
        let own = origin <> TBase
        match t with
        | TExperts -> experts
        | TPick(i, TExperts) -> (match experts with TStackOf items -> items[i] | e -> TPick(i, e))
        | TBase -> origin
        | TTaskVectors x -> if own then TTaskVectorsFrom(origin, sub x) else TTaskVectors(sub x)
        | TTaskVectorsFrom(o, x) -> TTaskVectorsFrom(sub o, sub x)
        | TPick(i, x) -> TPick(i, sub x)
        | TStackOf xs -> TStackOf(List.map sub xs)
        | TWithBase x ->
            match sub x with
            | TStackOf items when own -> TStackOf(origin :: items)
            | _ when own -> invalidOp "a slice base_model with every expert as a source"
            | x' -> TWithBase x'
        | TSparsify(sp, x) -> TSparsify(sp, sub x)
        | TElect x -> TElect(sub x)
        | TScale(f, x) -> TScale(f, sub x)
        | TSum x -> TSum(sub x)
        | TWeighted(ws, x) -> TWeighted(ws, sub x)
        | TDisjointWeighted(ws, x) -> TDisjointWeighted(ws, sub x)
        | TAddToBase x -> if own then TAddTo(origin, sub x) else TAddToBase(sub x)
        | TAddTo(o, x) -> TAddTo(sub o, sub x)
        | TSlerp(v, x) -> TSlerp(v, sub x)
        | TModelStock x -> TModelStock(sub x)
        | TPassthrough x -> TPassthrough(sub x)
        | TShift(d, x) -> TShift(d, sub x)
        | TRescaleL1(x, r) -> TRescaleL1(sub x, sub r)
        | TCombine(c, x) -> TCombine(c, sub x)

    /// Which tensors of the output a slice cell covers.
    type private Part =
        | Pre
        | OutLayer of int
        | Post

    /// The cells of a slices configuration: mergekit's plan (mergekit/plan.py): output layer j of slice s
    /// merges layer first + (j − start of s) of each source with t = index in the slice / (length − 1)
    /// (1 for a one-layer slice); embeddings use the first slice's sources, the other tensors outside the
    /// layers (final norm, lm_head) the last slice's, both at t = 0.
    let private sliceCells (spec: MethodSpec) (config: MergekitConfig) (filters: string list) termOf =
        let subsets = filters |> List.fold (fun acc f -> acc @ (acc |> List.map (Set.add f))) [ Set.empty ]
        let slices = config.Slices
        let expertIndex (path: string) = config.Models |> List.findIndex ((=) path)
        let usesBase = match spec.Family with Linear | PassthroughMethod | KarcherMethod -> false | _ -> true
        let baseOf (s: SliceDef) = if not usesBase then None else match s.BaseModel with Some b -> Some b | None -> config.Base
        let termFor (s: SliceDef) (sources: SliceSource list) (outStart: int option) (cell: Cell) =
            let sliceBase = baseOf s
            let isBase (src: SliceSource) = Some src.Source.Path = sliceBase
            let others = sources |> List.filter (isBase >> not)
            let sliceConfig =
                MergekitConfig(
                    config.File, config.Method, sliceBase,
                    others |> List.map (fun src -> { src.Source with Parameters = overlay src.Source.Parameters s.Parameters }),
                    overlay s.Parameters config.Globals, config.OutDType, [], (config.Tokenizer, config.ChatTemplate))
            let offset (src: SliceSource) = match outStart with Some o -> src.First - o | None -> 0
            let reference = sources |> List.tryFind isBase |> Option.defaultValue sources.Head
            let shift d x = if d = 0 then x else TShift(d, x)
            // The top-level base is an ordinary source of a slice that has a base_model of its own.
            let inputOf path = if Some path = config.Base then TBase else TPick(expertIndex path, TExperts)
            let items = others |> List.map (fun src -> shift (offset src - offset reference) (inputOf src.Source.Path))
            let allExperts = [ for i in 0 .. config.Models.Length - 1 -> TPick(i, TExperts) ]
            let experts = if items = allExperts then TExperts else TStackOf items
            let origin = match sliceBase with Some b when sliceBase <> config.Base -> inputOf b | _ -> TBase
            let length = (sources.Head.Last - sources.Head.First)
            shift (offset reference) (substitute origin experts (termOf spec sliceConfig length cell))
        let first, last = slices.Head, List.last slices
        [ for filtersIn in subsets do
              let pre = termFor first first.Sources None { Layer = None; Filters = filtersIn }
              // mergekit pairs the last slice's sources with as many entries as the first slice has.
              let post = termFor last (List.truncate first.Sources.Length last.Sources) None { Layer = None; Filters = filtersIn }
              yield Pre, filtersIn, pre
              yield Post, filtersIn, post
              let mutable start = 0
              for s in slices do
                  let length = s.Sources.Head.Last - s.Sources.Head.First
                  for i in 0 .. length - 1 do
                      yield OutLayer(start + i), filtersIn, termFor s s.Sources (Some start) { Layer = Some i; Filters = filtersIn }
                  start <- start + length ]

    let private partPattern (filters: string list) (part: Part) (inFilters: Set<string>) =
        let lookaheads =
            filters
            |> List.map (fun f -> if inFilters.Contains f then $"(?=.*{Regex.Escape f})" else $"(?!.*{Regex.Escape f})")
            |> String.concat ""
        let body =
            match part with
            | Pre -> @"(?=.*embed)(?!.*\.\d+\.).*"
            | Post -> @"(?!.*embed)(?!.*\.\d+\.).*"
            | OutLayer i -> $@"(?:(?!\.\d+\.).)*\.{i}\..*"
        lookaheads + body

    /// Every cell with its term, grouped by equal terms; the most common term becomes the fallback.
    let private build (layerCount: int) (config: MergekitConfig) =
        let spec = methods |> List.find (fun m -> m.Name = config.Method)
        let filters = filtersOf config
        if filters.Length > 8 then raise (YamlConfigText.YamlConfigError $"{config.File}: more than 8 distinct filters")
        if not config.Slices.IsEmpty then
            let cells = sliceCells spec config filters (termOf config.File)
            let groups = cells |> List.groupBy (fun (_, _, term) -> term)
            let fallback, _ = groups |> List.maxBy (fun (_, cs) -> cs.Length)
            let rules =
                groups
                |> List.filter (fun (term, _) -> term <> fallback)
                |> List.map (fun (term, cs) ->
                    let ps = cs |> List.map (fun (part, fs, _) -> partPattern filters part fs)
                    "re:" + (if ps.Length = 1 then ps.Head else "(?:" + String.Join("|", ps) + ")"), term)
            spec, fallback, rules
        else
        if config.UsesLayers && layerCount < 1 then raise (YamlConfigText.YamlConfigError $"{config.File}: gradients need the number of layers (found none)")
        let layers = if config.UsesLayers then None :: [ for i in 0 .. layerCount - 1 -> Some i ] else [ None ]
        let subsets =
            filters
            |> List.fold (fun acc f -> acc @ (acc |> List.map (Set.add f))) [ Set.empty ]
        let cells = [ for l in layers do for s in subsets -> { Layer = l; Filters = s } ]
        let terms = cells |> List.map (fun c -> c, termOf config.File spec config layerCount c)
        let groups = terms |> List.groupBy snd |> List.map (fun (term, cs) -> term, cs |> List.map fst)
        let fallback, _ = groups |> List.maxBy (fun (_, cs) -> cs.Length)
        let rules =
            groups
            |> List.filter (fun (term, _) -> term <> fallback)
            |> List.map (fun (term, cs) ->
                let body = cs |> List.map (cellPattern config.UsesLayers filters) |> fun ps -> if ps.Length = 1 then ps.Head else "(?:" + String.Join("|", ps) + ")"
                "re:" + body, term)
        spec, fallback, rules

    let private parametersOf (config: MergekitConfig) (layerCount: int) =
        [ "config", Path.GetFileName config.File; "semantics", "mergekit" ]
        @ (if config.UsesLayers then [ "layers", string layerCount ] else [])
        @ (match config.OutputLayers with Some n -> [ "output_layers", string n ] | None -> [])

    let toRecipe (layerCount: int) (config: MergekitConfig) =
        try
            let _, fallback, rules = build layerCount config
            let recipe =
                match rules with
                | [] -> Recipe.ofTensor (tensor fallback)
                | _ -> Recipe.select [ for p, t in rules -> Recipe.rule p (tensor t) ] (tensor fallback)
            let recipe = match config.OutputLayers with Some n -> Recipe.withLayers n recipe | None -> recipe
            Ok(recipe |> Recipe.named config.Method (parametersOf config layerCount))
        with
        | YamlConfigText.YamlConfigError msg -> Error msg
        | :? RecipeException as e -> Error $"{config.File}: {e.Message}"

    let toFSharp (layerCount: int) (config: MergekitConfig) =
        try
            let _, fallback, rules = build layerCount config
            let indent n (ls: string list) = ls |> List.map (fun l -> String(' ', n) + l)
            let quote (s: string) = "\"" + s.Replace("\\", "\\\\").Replace("\"", "\\\"") + "\""
            let body =
                match rules with
                | [] -> indent 4 (lines fallback @ [ "|> Recipe.ofTensor" ])
                | _ ->
                    [ yield "    Recipe.select"
                      yield "        ["
                      for p, t in rules do
                          yield $"            Recipe.rule {quote p} ("
                          yield! indent 16 (lines t)
                          yield "            )"
                      yield "        ]"
                      yield "        ("
                      yield! indent 12 (lines fallback)
                      yield "        )" ]
            let ps = parametersOf config layerCount |> List.map (fun (k, v) -> $"{quote k}, {quote v}")
            let args =
                (config.Base |> Option.map (fun b -> $"--base {b}") |> Option.toList)
                @ (config.Models |> List.map (fun m -> $"--model {m}"))
            let text =
                [ $"// Imported from {config.File} (mergekit {config.Method}, mergekit's rules; see docs/mergekit.md)."
                  $"""//   mergedsl run this.fsx {String.Join(" ", args)} --out OUT"""
                  "open MergeDsl"
                  ""
                  "let recipe =" ]
                @ body
                @ (match config.OutputLayers with Some n -> [ $"    |> Recipe.withLayers {n}" ] | None -> [])
                @ [
                  $"""    |> Recipe.named {quote config.Method} [ {String.Join("; ", ps)} ]""" ]
            Ok(String.Join("\n", text) + "\n")
        with YamlConfigText.YamlConfigError msg ->
            Error msg
