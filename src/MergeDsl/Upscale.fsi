namespace MergeDsl

open MergeDsl.Core.Checkpoints
open MergeDsl.Core.Ir
open MergeDsl.Core.Models
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

/// `upscaleToMoE`: turns selected modules of a CLIP vision model or of a Llama-family decoder into MoE modules (see docs/moe.md).
/// `MethodRegistry` names these specs for the CLI (`wemoe`, `e-wemoe`, `smile`).
[<RequireQualifiedAccess>]
module Upscale =
    /// WEMoE defaults: every MLP, depth-2 routers, λ = 0.3, rest = task arithmetic 0.3.
    val wemoe: MoeSpec
    /// E-WEMoE defaults: WEMoE with task vectors pruned to 10%.
    val ewemoe: MoeSpec
    /// SMILE defaults: every MLP's fc1/fc2, rank 16, gate rank 4, top-1.
    val smile: MoeSpec
    /// The core specification and the rest recipe (what the C# upscaler runs).
    val toCore: spec: MoeSpec -> UpscaleSpec * MergeRecipe
    /// Upscales in memory: base and expert checkpoints (any ITensorSource) into an MoE model.
    val upscaleToMoE: spec: MoeSpec -> config: ClipVisionConfig -> baseModel: ITensorSource -> experts: ITensorSource list -> MoeModel
    /// Upscales a Llama/Mistral/Qwen2 decoder in memory: the selected `model.layers.N.mlp` (gate/up/down projections)
    /// become MoE modules routed per token; the result scores and generates as any decoder (see docs/moe.md).
    val upscaleDecoderToMoE:
        spec: MoeSpec -> config: MergeDsl.Core.Models.Decoder.DecoderConfig -> baseModel: ITensorSource -> experts: ITensorSource list -> DecoderMoeModel
    /// Upscales model folders to an output folder (CLIP: config.json + model.safetensors + heads/; a decoder base:
    /// config.json + model.safetensors + the base's tokenizer files); `overwrite` replaces an existing output folder.
    val run: spec: MoeSpec -> baseFolder: string -> expertFolders: string list -> output: string -> overwrite: bool -> UpscaleSummary
