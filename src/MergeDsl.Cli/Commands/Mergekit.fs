/// mergekit YAML configurations: `mergedsl run config.yml --out DIR`, `mergedsl plan config.yml`
/// and `mergedsl import config.yml` (prints the equivalent F# recipe). The YAML names the models,
/// so --base, --model and --set are refused with it; everything is checked before any tensor is read.
module MergeDsl.Cli.Commands.Mergekit

open System
open Argu
open MergeDsl
open MergeDsl.Core.Checkpoints
open MergeDsl.Core.Compilation
open MergeDsl.Cli.Jobs
open MergeDsl.Cli.Jobs.Failure

/// Whether a recipe argument is a mergekit configuration (by its extension).
let isConfig (recipe: string) =
    recipe.EndsWith(".yml", StringComparison.OrdinalIgnoreCase)
    || recipe.EndsWith(".yaml", StringComparison.OrdinalIgnoreCase)

let private loadConfig (path: string) =
    match MergekitConfig.load path with
    | Ok c -> c
    | Error msg -> raise (UsageError msg)

/// Layers of a model folder, counted from its tensor names as the compiler counts them (1 + the
/// largest first `.N.` index); headers only.
let private layersOf (reference: string) =
    let path = reference |> MergeDsl.Cli.Jobs.JobInputs.modelFolder "model"
    use c =
        try Checkpoint.Open path
        with
        | :? CheckpointFormatException as e -> raise (UsageError $"{path}: not a valid checkpoint: {e.Message}")
        | :? IO.IOException as e -> raise (UsageError $"{path}: not a checkpoint ({e.Message})")
    1 + (c.Tensors |> Seq.map (fun t -> ScaleResolver.LayerIndex t.Name |> Option.ofNullable |> Option.defaultValue -1) |> Seq.fold max -1)

/// Layers of the first model the recipe reads (the base when there is one).
let private layerCount (config: MergekitConfig) =
    layersOf (config.Base |> Option.defaultWith (fun () -> List.head config.Models))

/// Every `slices` source's layer_range lies inside its model (headers only, before anything is merged).
let private checkLayerRanges (config: MergekitConfig) =
    let depth = Collections.Generic.Dictionary<string, int>()
    for r in config.LayerRanges do
        if not (depth.ContainsKey r.Model) then depth[r.Model] <- layersOf r.Model
        let n = depth[r.Model]
        if r.Last > n then
            raise (UsageError $"{config.File}:{r.Line}: layer_range [{r.First}, {r.Last}] is outside '{r.Model}', which has {n} layers (0 … {n - 1}; the end is exclusive)")

let private layersFor (config: MergekitConfig) (given: int option) =
    match given with
    | Some n -> n
    | None -> if config.UsesLayers then layerCount config else 0

/// The output tokenizer the configuration asks for (None: the base's files are copied as for any merge).
let private tokenizerOf (config: MergekitConfig) : OutputTokenizer.Request option =
    let kind, model =
        match config.Tokenizer |> Option.map (fun t -> t.Source) with
        | None -> None, None
        | Some BaseTokenizer -> Some MergeDsl.Core.Models.Decoder.Tokenizers.TokenizerSourceKind.Base, None
        | Some UnionTokenizer -> Some MergeDsl.Core.Models.Decoder.Tokenizers.TokenizerSourceKind.Union, None
        | Some(ModelTokenizer p) -> Some MergeDsl.Core.Models.Decoder.Tokenizers.TokenizerSourceKind.Model, Some p
    if kind.IsNone && config.ChatTemplate.IsNone then None
    else
        Some
            { Source = kind
              SourceModel = model
              PadToMultipleOf = config.Tokenizer |> Option.bind (fun t -> t.PadToMultipleOf)
              Tokens = config.Tokenizer |> Option.map (fun t -> t.Tokens) |> Option.defaultValue []
              ChatTemplate = config.ChatTemplate }

/// The request for a mergekit configuration: its recipe, models and dtype replace the command line's.
let apply (req: MergeJob.Request) (path: string) : MergeJob.Request =
    if req.Base.IsSome || not req.Models.IsEmpty then
        raise (UsageError $"{path}: the configuration names the models; drop --base and --model")
    if not req.Settings.IsEmpty then
        raise (UsageError $"--set {fst req.Settings.Head}: a mergekit configuration takes its parameters from the YAML")
    let config = loadConfig path
    checkLayerRanges config
    let recipe =
        match MergekitConfig.toRecipe (layersFor config None) config with
        | Ok r -> r
        | Error msg -> raise (UsageError msg)
    { req with
        Recipe = JobInputs.Given(recipe, path)
        Base = config.Base
        Models = config.Models
        DType = (match req.DType with Some d -> Some d | None -> config.OutDType)
        Tokenizer = tokenizerOf config }

type Args =
    | [<MainCommand; ExactlyOnce>] Config of config: string
    | Layers of count: int
    | [<AltCommandLine("-o")>] Out of file: string

    interface IArgParserTemplate with
        member this.Usage =
            match this with
            | Config _ -> "a mergekit YAML configuration (merge_method, base_model, models, parameters)."
            | Layers _ -> "number of layers for gradients (default: counted from the base model's tensor names)."
            | Out _ -> "write the recipe script here instead of printing it (must not exist)."

/// Entry point for `mergedsl import`.
let run (args: ParseResults<Args>) : int =
    let path = args.GetResult Config
    if not (isConfig path) then raise (UsageError $"{path}: expected a .yml or .yaml mergekit configuration")
    let text =
        if IO.File.Exists path && MergekitMoeConfig.isMoeConfig (IO.File.ReadAllText path) then
            // A mergekit-moe configuration: the `sparseMoe { ... }` recipe.
            match MergekitMoeConfig.load path with
            | Ok spec -> MergekitMoeConfig.toFSharp spec
            | Error msg -> raise (UsageError msg)
        else
        let config = loadConfig path
        checkLayerRanges config
        match args.TryGetResult Layers with
        | Some n when n < 1 -> raise (UsageError $"--layers: {n} is not a positive number of layers")
        | _ -> ()
        match MergekitConfig.toFSharp (layersFor config (args.TryGetResult Layers)) config with
        | Ok t -> t
        | Error msg -> raise (UsageError msg)
    match args.TryGetResult Out with
    | None -> printf "%s" text
    | Some out ->
        if IO.File.Exists out || IO.Directory.Exists out then raise (UsageError $"--out {out}: already exists")
        IO.File.WriteAllText(out, text)
    ExitCode.Ok
