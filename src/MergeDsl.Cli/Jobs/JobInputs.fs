/// Everything `run`, `plan`, `bench` and recipe scripts share before a tensor is read: resolving the
/// recipe (built-in name or .fsx script), checking the command line, opening the checkpoints.
/// Every problem is raised as one line naming the parameter or file at fault.
module MergeDsl.Cli.Jobs.JobInputs

open System
open System.IO
open MergeDsl
open MergeDsl.Core.Ir
open MergeDsl.Core.Checkpoints
open MergeDsl.Cli.Jobs.Failure

/// Where the recipe comes from.
type RecipeSource =
    /// A built-in method name (see `MethodRegistry.names`).
    | BuiltIn of string
    /// An .fsx script evaluated with FSharp.Compiler.Service.
    | Script of string
    /// A recipe value (a script run by `dotnet fsi` hands its own recipe over).
    | Given of MergeRecipe * origin: string

/// `<recipe>` as typed: a path ending in .fsx is a script, anything else a method name.
let recipeSource (text: string) =
    if text.EndsWith(".fsx", StringComparison.OrdinalIgnoreCase) then Script text else BuiltIn text

/// A resolved recipe and what to record about it.
type ResolvedRecipe =
    { Recipe: MergeRecipe
      /// "built-in", or the script's path.
      Origin: string
      /// The randomness seed to hand to the executor (from --seed or --set seed=N).
      Seed: int64 option
      /// How many --model inputs the recipe takes (scripts: at least one).
      Models: ModelCount }

let rec private mentionsBase (e: Expr) =
    match e with
    | :? BaseModel -> true
    | _ -> e.Children |> Seq.exists mentionsBase

/// True when some rule of the recipe reads the base model.
let needsBase (r: MergeRecipe) =
    mentionsBase r.Fallback || r.Rules |> Seq.exists (fun rule -> mentionsBase rule.Expr)

let private parseSeed (text: string) =
    match Int64.TryParse(text.Trim()) with
    | true, s -> s
    | _ -> raise (UsageError $"--seed: '{text}' is not an integer")

/// Turns the recipe argument and the `--set` pairs into a recipe, checking every name and value.
/// `models` is how many --model folders were given (slerp takes exactly two).
let resolveRecipe (source: RecipeSource) (settings: (string * string) list) (seed: int64 option) (models: int) : ResolvedRecipe =
    let dup = settings |> List.countBy fst |> List.tryFind (fun (_, n) -> n > 1)
    match dup with
    | Some (k, _) -> raise (UsageError $"--set {k}: given more than once")
    | None -> ()
    let seedFromSet = settings |> List.tryFind (fun (k, _) -> k = "seed") |> Option.map (snd >> parseSeed)
    let seed =
        match seed, seedFromSet with
        | Some a, Some b when a <> b -> raise (UsageError $"--seed {a} and --set seed={b} disagree")
        | Some a, _ -> Some a
        | None, b -> b
    match source with
    | BuiltIn name ->
        // The registry validates names, parameter names and ranges before anything is opened.
        if (MethodRegistry.tryFind name).IsNone then
            let known = String.Join(", ", MethodRegistry.names)
            raise (UsageError $"unknown recipe '{name}' (built-in: {known}; or a path to an .fsx script)")
        match MethodRegistry.resolve name (Map.ofList settings) with
        | Error msg -> raise (UsageError msg)
        | Ok { Build = BuiltUpscaling _; Method = m } ->
            raise (UsageError $"recipe '{m.Name}' upscales to a mixture of experts; use `mergedsl upscale {m.Name}` or `mergedsl run {m.Name}`")
        | Ok ({ Build = BuiltMerge recipe } as resolved) ->
            match MethodRegistry.checkModels resolved.Method models with
            | Error msg -> raise (UsageError $"--model: {msg}")
            | Ok () -> { Recipe = recipe; Origin = "built-in"; Seed = seed; Models = resolved.Method.Models }
    | Script path ->
        if not (File.Exists path) then raise (UsageError $"{path}: recipe script not found")
        ScriptParams.reset (settings |> List.filter (fun (k, _) -> k <> "seed"))
        let value, ty =
            try RecipeScript.evaluate path
            with :? ArgumentException as e -> raise (UsageError e.Message)
        let unread = ScriptParams.unread ()
        if not unread.IsEmpty then
            let k = List.head unread
            raise (UsageError $"--set {k}: unknown parameter for {path} (the script reads no parameter named '{k}')")
        match value with
        | :? MergeRecipe as r -> { Recipe = r; Origin = path; Seed = seed; Models = AtLeast 1 }
        | _ -> raise (UsageError $"{path}: 'recipe' is a {ty.Name}, expected a MergeRecipe (build it with Recipe.ofTensor or Recipe.select)")
    | Given (r, origin) -> { Recipe = r; Origin = origin; Seed = seed; Models = AtLeast 1 }

/// The command-line inputs of a merge.
type Inputs =
    { Base: string option
      Models: string list
      /// Only for `run`: the output folder.
      Out: string option
      Force: bool }

/// Resolves a model reference as typed after `role` (`--base`, `--model`, a YAML key): a local path (relative to
/// the working directory), else a Hugging Face repo id (`org/name`, `org/name@revision`) in the local hub cache,
/// optionally `model+adapter` (a PEFT LoRA adapter applied before merging). Usage error (one line) when not found.
let resolveModel (role: string) (text: string) : ModelReference =
    try ModelReference.Resolve(text)
    with :? ModelReferenceException as e -> raise (UsageError $"{role} {e.Message}")

/// The local folder (or file) of a reference that must not carry an adapter (`inspect`, `score`, `upscale`, ...).
let modelFolder (role: string) (text: string) : string =
    let r = resolveModel role text
    match Option.ofObj r.Adapter with
    | Some _ -> raise (UsageError $"{role} {text}: a model+adapter reference is applied only by merges (run, plan); merge it into a folder first")
    | None -> r.Folder

/// How a reference is recorded in the model card: its path, or the text with the folder it resolved to.
let describeModel (text: string) : string =
    let r = ModelReference.Resolve(text)
    if isNull r.Adapter && r.Folder = Path.TrimEndingDirectorySeparator(Path.GetFullPath text) then r.Folder
    else $"{text} ({r.Canonical})"

/// The inputs --out must keep away from (compared by real path): every model and adapter folder.
let outputInputs (inputs: Inputs) =
    let refs role text =
        let r = resolveModel role text
        OutputInput.Of(role, r.Folder) :: (Option.ofObj r.Adapter |> Option.map (fun a -> OutputInput.Of(role, a)) |> Option.toList)
    (inputs.Base |> Option.map (refs "--base") |> Option.defaultValue [])
    @ (inputs.Models |> List.collect (refs "--model"))

/// Checks an output folder against the inputs and the overwrite rule (see `OutputFolder.Validate`), as a usage error.
let checkOut (out: string) (force: bool) (inputs: OutputInput list) =
    try OutputFolder.Validate(out, force, inputs, "use --force")
    with :? OutputRefusedException as e -> raise (UsageError $"--out: {e.Message}")

/// Reserves (locks) an output folder after the same checks; refusals are usage errors, a held lock a failure.
let reserveOut (out: string) (force: bool) (inputs: OutputInput list) =
    try OutputFolder.Reserve(out, force, inputs, "use --force")
    with :? OutputRefusedException as e -> raise (UsageError $"--out: {e.Message}")

/// Checks the folders on the command line before anything is opened or created.
let checkInputs (inputs: Inputs) (recipe: ResolvedRecipe) =
    match recipe.Models with
    | AtLeast n when inputs.Models.Length < n ->
        raise (UsageError (if n = 1 then "--model: give at least one model folder" else $"--model: give at least {n} model folders"))
    | _ -> ()
    if needsBase recipe.Recipe && inputs.Base.IsNone then
        raise (UsageError $"--base: recipe '{recipe.Recipe.Name}' uses the base model; give it with --base DIR")
    let roles = (inputs.Base |> Option.map (fun b -> "--base", b) |> Option.toList) @ (inputs.Models |> List.map (fun m -> "--model", m))
    for role, p in roles do
        resolveModel role p |> ignore
    match inputs.Out with
    | Some out -> checkOut out inputs.Force (outputInputs inputs)
    | None -> ()

/// Opened checkpoints; disposing closes them all.
type Opened =
    { Base: ITensorSource option
      Models: ITensorSource list }
    member this.All = Option.toList this.Base @ this.Models
    interface IDisposable with
        member this.Dispose() =
            for c in this.All do
                c.Dispose()

let private openCheckpoint (role: string) (path: string) =
    try Checkpoint.Open path
    with
    | :? CheckpointFormatException as e -> raise (UsageError $"{role} {path}: not a valid checkpoint: {e.Message}")
    | :? FileNotFoundException as e -> raise (UsageError $"{role} {path}: not a checkpoint ({e.Message})")
    | :? DirectoryNotFoundException -> raise (UsageError $"{role} {path}: no such folder")

/// Opens a reference: its checkpoint, with its LoRA adapter applied when it names one.
let openOne (role: string) (text: string) : ITensorSource =
    let r = resolveModel role text
    let model = openCheckpoint role r.Folder
    match Option.ofObj r.Adapter with
    | None -> model :> ITensorSource
    | Some adapterFolder ->
        try
            let adapter =
                try MergeDsl.Core.Lora.LoraAdapter.Open adapterFolder
                with :? CheckpointFormatException as e -> raise (UsageError $"{role} {text}: bad LoRA adapter: {e.Message}")
            try new MergeDsl.Core.Lora.LoraAdaptedSource(model, adapter) :> ITensorSource
            with :? CheckpointFormatException as e ->
                adapter.Dispose()
                raise (UsageError $"{role} {text}: adapter does not fit the model: {e.Message}")
        with _ ->
            model.Dispose()
            reraise ()

/// Opens (and validates the headers of) every input.
let openAll (inputs: Inputs) : Opened =
    let opened = Collections.Generic.List<ITensorSource>()
    try
        let b = inputs.Base |> Option.map (fun p -> let c = openOne "--base" p in opened.Add c; c)
        let ms = inputs.Models |> List.map (fun p -> let c = openOne "--model" p in opened.Add c; c)
        { Base = b; Models = ms }
    with _ ->
        for c in opened do
            c.Dispose()
        reraise ()

/// Labels for the experts: folder names, made unique with a numeric suffix where they repeat.
let expertLabels (models: string list) =
    let nameOf (p: string) = Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath p))
    let label (text: string) =
        match (try Some(ModelReference.Resolve text) with :? ModelReferenceException -> None) with
        | Some r when not (isNull r.Adapter) -> nameOf r.Folder + "+" + nameOf r.Adapter
        | _ -> nameOf text
    let names = models |> List.map label
    names
    |> List.mapi (fun i n ->
        if (names |> List.filter ((=) n) |> List.length) > 1 then $"{n}#{i + 1}" else n)
