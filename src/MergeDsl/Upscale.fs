namespace MergeDsl

open MergeDsl.Core.Ir
open MergeDsl.Core.Moe

type Routing =
    | Dense
    | TopK of k: int
    | TopP of p: float

type MoeMethod =
    | WeMoE
    | EWeMoE
    | Smile

type MoeSpec =
    { /// Module kind.
      Method: MoeMethod
      Modules: string list
      Rest: MergeRecipe
      RouterDepth: int
      InitLambda: float
      BatchReduce: bool
      Routing: Routing option
      Keep: float option
      SharedRouter: bool
      Rank: int
      GateRank: int
      Seed: int64 }

[<RequireQualifiedAccess>]
module Upscale =
    let wemoe =
        { Method = WeMoE
          Modules = [ "*.mlp" ]
          Rest = Methods.taskArithmetic 0.3
          RouterDepth = 2
          InitLambda = 0.3
          BatchReduce = false
          Routing = None
          Keep = None
          SharedRouter = false
          Rank = 16
          GateRank = 4
          Seed = 42L }

    let ewemoe = { wemoe with Method = EWeMoE }

    let smile = { wemoe with Method = Smile }

    let private routing =
        function
        | Dense -> RouterSelection.Dense
        | TopK k -> RouterSelection.TopKOf k
        | TopP p -> RouterSelection.TopPOf p

    let toCore (spec: MoeSpec) : UpscaleSpec * MergeRecipe =
        let kind =
            match spec.Method with
            | WeMoE -> MoeKind.WeMoE
            | EWeMoE -> MoeKind.EWeMoE
            | Smile -> MoeKind.Smile
        let restLambda =
            match spec.Rest.Parameters.TryGetValue "lambda" with
            | true, v when spec.Rest.Name = "task-arithmetic" -> float v
            | _ -> 0.3   // informational only: `rest` names the recipe actually used
        let core =
            UpscaleSpec(
                Kind = kind,
                Modules = Array.ofList spec.Modules,
                RestLambda = restLambda,
                Rest = (if spec.Rest.Name = "task-arithmetic" then null else spec.Rest.Name),
                RouterDepth = spec.RouterDepth,
                InitLambda = spec.InitLambda,
                BatchReduce = spec.BatchReduce,
                Routing = (spec.Routing |> Option.map routing |> Option.toObj),
                KeepFraction = (spec.Keep |> Option.toNullable),
                SharedRouter = spec.SharedRouter,
                Rank = spec.Rank,
                GateRank = spec.GateRank,
                Seed = spec.Seed)
        core, spec.Rest

    let upscaleToMoE (spec: MoeSpec) (config: MergeDsl.Core.Models.ClipVisionConfig) (baseModel: MergeDsl.Core.Checkpoints.ITensorSource)
                     (experts: MergeDsl.Core.Checkpoints.ITensorSource list) : MoeModel =
        let core, restRecipe = toCore spec
        Upscaler.Upscale(config, baseModel, ResizeArray experts, core, restRecipe)

    let upscaleDecoderToMoE (spec: MoeSpec) (config: MergeDsl.Core.Models.Decoder.DecoderConfig)
                            (baseModel: MergeDsl.Core.Checkpoints.ITensorSource) (experts: MergeDsl.Core.Checkpoints.ITensorSource list) : DecoderMoeModel =
        let core, restRecipe = toCore spec
        DecoderUpscaler.Upscale(config, baseModel, ResizeArray experts, core, restRecipe)

    let run (spec: MoeSpec) (baseFolder: string) (expertFolders: string list) (output: string) (overwrite: bool) : UpscaleSummary =
        let core, restRecipe = toCore spec
        UpscaleJob.Run(baseFolder, ResizeArray expertFolders, output, core, restRecipe, overwrite)
