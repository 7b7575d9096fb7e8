namespace MergeDsl

open System
open MergeDsl.Core.Checkpoints
open MergeDsl.Core.Moe.Sparse.Upcycling

type GateInit =
    | Hidden
    | HiddenAverage
    | CheapEmbed
    | RandomGates
    | UniformRandomGates

type SparseFormat =
    | Mixtral
    | Qwen2Moe
    | DeepseekMoe

type SparseMoeExpert =
    { Model: string
      Positive: string list
      Negative: string list
      NoiseScale: float option
      ResidualScale: float option }

type SparseMoeSpec =
    { Base: string
      Experts: SparseMoeExpert list
      Shared: SparseMoeExpert list
      Gate: GateInit
      ExpertsPerToken: int
      DType: string option
      Format: SparseFormat option
      Seed: int64
      AllowIdenticalExperts: bool }

[<RequireQualifiedAccess>]
module Upcycle =
    let defaults =
        { Base = ""
          Experts = []
          Shared = []
          Gate = Hidden
          ExpertsPerToken = 2
          DType = None
          Format = None
          Seed = 42L
          AllowIdenticalExperts = false }

    let expert (model: string) (prompts: string list) =
        { Model = model; Positive = prompts; Negative = []; NoiseScale = None; ResidualScale = None }

    let private coreGate =
        function
        | Hidden -> GateMode.Hidden
        | HiddenAverage -> GateMode.HiddenAverage
        | CheapEmbed -> GateMode.CheapEmbed
        | RandomGates -> GateMode.Random
        | UniformRandomGates -> GateMode.UniformRandom

    let gateName (gate: GateInit) = GateModes.Name(coreGate gate)

    let parseGate (name: string) =
        match GateModes.Names |> Seq.tryFind (fun struct (n, _) -> n = name) with
        | Some(struct (_, GateMode.Hidden)) -> Ok Hidden
        | Some(struct (_, GateMode.HiddenAverage)) -> Ok HiddenAverage
        | Some(struct (_, GateMode.CheapEmbed)) -> Ok CheapEmbed
        | Some(struct (_, GateMode.Random)) -> Ok RandomGates
        | Some(struct (_, GateMode.UniformRandom)) -> Ok UniformRandomGates
        | _ ->
            let known = String.Join(", ", GateModes.Names |> Seq.map (fun struct (n, _) -> n))
            Error $"unknown gate mode '{name}' (expected {known})"

    let private dtypeOf (text: string) =
        match text.ToLowerInvariant() with
        | "float32" | "fp32" | "f32" -> DType.F32
        | "float16" | "fp16" | "f16" | "half" -> DType.F16
        | "bfloat16" | "bf16" -> DType.BF16
        | v -> raise (ArgumentException $"dtype: unknown dtype '{v}' (expected float32, float16 or bfloat16)")

    let private resolve (searchFolders: string list) (what: string) (text: string) =
        let r =
            try ModelReference.Resolve(text, ResizeArray searchFolders)
            with :? ModelReferenceException as e -> raise (ArgumentException $"{what}: {e.Message}")
        if not (isNull r.Adapter) then
            raise (ArgumentException $"{what}: {text}: a model+adapter reference is applied only by merges; merge it into a folder first")
        r.Folder

    let toCore (searchFolders: string list) (spec: SparseMoeSpec) : UpcycleSpec =
        if String.IsNullOrWhiteSpace spec.Base then raise (ArgumentException "base_model: no base model given")
        let ex what (e: SparseMoeExpert) =
            UpcycleExpert(
                resolve searchFolders $"{what}.source_model" e.Model,
                ResizeArray e.Positive,
                ResizeArray e.Negative,
                Option.toNullable e.NoiseScale,
                Option.toNullable e.ResidualScale)
        let format =
            spec.Format
            |> Option.map (function
                | Mixtral -> UpcycleArchitecture.Mixtral
                | Qwen2Moe -> UpcycleArchitecture.Qwen2Moe
                | DeepseekMoe -> UpcycleArchitecture.DeepseekMoe)
        UpcycleSpec(
            resolve searchFolders "base_model" spec.Base,
            ResizeArray(spec.Experts |> List.mapi (fun i e -> ex $"experts[{i}]" e)),
            ResizeArray(spec.Shared |> List.mapi (fun i e -> ex $"shared_experts[{i}]" e)),
            coreGate spec.Gate,
            spec.ExpertsPerToken,
            (spec.DType |> Option.map dtypeOf |> Option.toNullable),
            Option.toNullable format,
            spec.Seed,
            spec.AllowIdenticalExperts)

    let validate (spec: SparseMoeSpec) =
        try
            UpcyclePlan.Make(toCore [] spec) |> ignore
            Ok spec
        with :? ArgumentException as e -> Error e.Message

    let upscaleToMoE (spec: SparseMoeSpec) (output: string) (overwrite: bool) =
        UpcycleJob.Run(toCore [] spec, output, overwrite)

type SparseMoeBuilder() =
    member _.Yield(_: 'T) = Upcycle.defaults

    member _.Run(spec: SparseMoeSpec) =
        match Upcycle.validate spec with
        | Ok s -> s
        | Error msg -> raise (ArgumentException msg)

    [<CustomOperation("base_model")>]
    member _.BaseModel(spec: SparseMoeSpec, model: string) = { spec with Base = model }

    [<CustomOperation("gate_mode")>]
    member _.GateMode(spec: SparseMoeSpec, gate: GateInit) = { spec with Gate = gate }

    [<CustomOperation("experts_per_token")>]
    member _.ExpertsPerToken(spec: SparseMoeSpec, k: int) = { spec with ExpertsPerToken = k }

    [<CustomOperation("expert")>]
    member _.Expert(spec: SparseMoeSpec, model: string, prompts: string list) =
        { spec with Experts = spec.Experts @ [ Upcycle.expert model prompts ] }

    [<CustomOperation("add_expert")>]
    member _.AddExpert(spec: SparseMoeSpec, expert: SparseMoeExpert) = { spec with Experts = spec.Experts @ [ expert ] }

    [<CustomOperation("shared_expert")>]
    member _.SharedExpert(spec: SparseMoeSpec, expert: SparseMoeExpert) = { spec with Shared = spec.Shared @ [ expert ] }

    [<CustomOperation("dtype")>]
    member _.DType(spec: SparseMoeSpec, dtype: string) = { spec with DType = Some dtype }

    [<CustomOperation("architecture")>]
    member _.Architecture(spec: SparseMoeSpec, format: SparseFormat) = { spec with Format = Some format }

    [<CustomOperation("seed")>]
    member _.Seed(spec: SparseMoeSpec, seed: int64) = { spec with Seed = seed }

[<AutoOpen>]
module SparseMoeBuilderInstance =
    let sparseMoe = SparseMoeBuilder()
