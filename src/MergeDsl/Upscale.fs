namespace MergeDsl

open MergeDsl.Core.Ir
open MergeDsl.Core.Moe

/// Expert selection of an MoE router.
type Routing =
    /// Every expert with its weight.
    | Dense
    /// The k highest-scoring experts.
    | TopK of k: int
    /// The smallest set of experts whose probability mass reaches p.
    | TopP of p: float

/// Which MoE module the selected sites become.
type MoeMethod =
    /// WEMoE: weight-ensembling MLPs, routers trained by test-time adaptation.
    | WeMoE
    /// E-WEMoE: task vectors pruned to a kept fraction; optionally one shared router.
    | EWeMoE
    /// SMILE: training-free low-rank SVD experts routed per token.
    | Smile

/// An upscaling recipe, written as a record: `{ Upscale.wemoe with Modules = [ "*.mlp" ]; RouterDepth = 1 }`.
type MoeSpec =
    { /// Module kind.
      Method: MoeMethod
      /// Module-path patterns (glob or "re:"), e.g. "*.mlp", "*.self_attn.*_proj".
      Modules: string list
      /// Recipe for every parameter that is not upscaled (default: task arithmetic λ = 0.3).
      Rest: MergeRecipe
      /// Router depth 0, 1 or 2 (WEMoE).
      RouterDepth: int
      /// Initial routing weight λ.
      InitLambda: float
      /// One route per batch instead of per sample.
      BatchReduce: bool
      /// Expert selection (None: dense for WEMoE, top-1 for SMILE).
      Routing: Routing option
      /// E-WEMoE kept fraction of each task vector (None: 0.1 for E-WEMoE, 1 otherwise).
      Keep: float option
      /// One router shared by all upscaled modules.
      SharedRouter: bool
      /// SMILE expert rank k.
      Rank: int
      /// SMILE gate rank g.
      GateRank: int
      /// Router initialisation seed.
      Seed: int64 }

/// `upscaleToMoE`: turns selected modules of a CLIP vision model into MoE modules (see docs/moe.md).
[<RequireQualifiedAccess>]
module Upscale =
    /// WEMoE defaults: every MLP, depth-2 routers, λ = 0.3, rest = task arithmetic 0.3.
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

    /// E-WEMoE defaults: WEMoE with task vectors pruned to 10%.
    let ewemoe = { wemoe with Method = EWeMoE }

    /// SMILE defaults: every MLP's fc1/fc2, rank 16, gate rank 4, top-1.
    let smile = { wemoe with Method = Smile }

    /// Upscale these module patterns.
    let select (patterns: string list) (spec: MoeSpec) = { spec with Modules = patterns }

    /// Merge the non-upscaled parameters with this recipe.
    let rest (recipe: MergeRecipe) (spec: MoeSpec) = { spec with Rest = recipe }

    let private routing =
        function
        | Dense -> RouterSelection.Dense
        | TopK k -> RouterSelection.TopKOf k
        | TopP p -> RouterSelection.TopPOf p

    /// The core specification and the rest recipe (what the C# upscaler runs).
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

    /// Upscales in memory: base and expert checkpoints (any ITensorSource) into an MoE model.
    let upscaleToMoE (spec: MoeSpec) (config: MergeDsl.Core.Models.ClipVisionConfig) (baseModel: MergeDsl.Core.Checkpoints.ITensorSource)
                     (experts: MergeDsl.Core.Checkpoints.ITensorSource list) : MoeModel =
        let core, restRecipe = toCore spec
        Upscaler.Upscale(config, baseModel, ResizeArray experts, core, restRecipe)

    /// Upscales model folders to an output folder (config.json + model.safetensors + heads/).
    let run (spec: MoeSpec) (baseFolder: string) (expertFolders: string list) (output: string) : UpscaleSummary =
        let core, restRecipe = toCore spec
        UpscaleJob.Run(baseFolder, ResizeArray expertFolders, output, core, restRecipe)

    /// The spec a method name and `--set key=value` settings describe (CLI `mergedsl upscale` / `run wemoe`):
    /// method wemoe | e-wemoe | smile; keys as UpscaleSpec.With plus `lambda` for the rest's task arithmetic.
    let fromSettings (methodName: string) (settings: (string * string) list) : UpscaleSpec * MergeRecipe =
        let start =
            match methodName.ToLowerInvariant() with
            | "wemoe" | "we-moe" -> wemoe
            | "e-wemoe" | "ewemoe" | "sparse-wemoe" -> ewemoe
            | "smile" -> smile
            | other -> invalidArg "method" $"upscale: unknown method '{other}' (wemoe, e-wemoe, smile)"
        let core0, _ = toCore start
        let core = settings |> List.fold (fun (s: UpscaleSpec) (k, v) -> s.With(k, v)) core0
        core, Methods.taskArithmetic core.RestLambda

    /// `mergedsl run wemoe --base DIR --model DIR … --out DIR --set k=v`: the entry point the CLI can call.
    let runFromCli (methodName: string) (baseFolder: string) (expertFolders: string list) (output: string)
                   (settings: (string * string) list) (overwrite: bool) : UpscaleSummary =
        let core, restRecipe = fromSettings methodName settings
        UpscaleJob.Run(baseFolder, ResizeArray expertFolders, output, core, restRecipe, overwrite)
