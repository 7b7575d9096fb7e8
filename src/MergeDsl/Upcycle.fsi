namespace MergeDsl

open MergeDsl.Core.Moe.Sparse.Upcycling

/// How the routers of an upcycled sparse MoE are initialised (mergekit-moe's `gate_mode`).
type GateInit =
    /// `hidden`: the base's residual stream entering each layer at the last token of each positive prompt, averaged
    /// over prompts, minus the same for the negative prompts, L2-normalised; one row per expert and layer.
    | Hidden
    /// `hidden_avg`: as Hidden with each prompt's mean over its tokens.
    | HiddenAverage
    /// `cheap_embed`: normalised sum of the prompts' token embeddings, the same row in every layer.
    | CheapEmbed
    /// `random`: N(0, 1) entries (seeded).
    | RandomGates
    /// `uniform_random`: U(−1/√hidden, 1/√hidden) entries (seeded).
    | UniformRandomGates

/// The checkpoint format written (mergekit-moe's `architecture`).
type SparseFormat =
    /// `MixtralForCausalLM`: routed experts only.
    | Mixtral
    /// `Qwen2MoeForCausalLM`: exactly one shared expert with a sigmoid gate.
    | Qwen2Moe
    /// `DeepseekForCausalLM` (DeepSeek-MoE v1): at most one ungated shared expert.
    | DeepseekMoe

/// One expert: a dense model whose MLPs become the expert, with the prompts its router row is built from.
type SparseMoeExpert =
    { /// The dense model: a folder or a Hugging Face repo id in the local hub cache.
      Model: string
      /// Texts routed to this expert.
      Positive: string list
      /// Texts not routed to it (subtracted).
      Negative: string list
      /// Standard deviation of noise added to its MLP weights (seeded), if any.
      NoiseScale: float option
      /// Factor on its down projection (its output), if any.
      ResidualScale: float option }

/// A sparse upcycling recipe (mergekit-moe's configuration as a record); build it with `sparseMoe { ... }` or
/// `{ Upcycle.defaults with ... }` and run it with `Upcycle.upscaleToMoE`.
type SparseMoeSpec =
    { /// The dense base model (attention, norms, embeddings, LM head).
      Base: string
      /// Routed experts, in router order.
      Experts: SparseMoeExpert list
      /// Always-on experts (at most one).
      Shared: SparseMoeExpert list
      /// Router initialisation.
      Gate: GateInit
      /// Routed experts per token (1 … number of experts).
      ExpertsPerToken: int
      /// Output dtype ("float32", "float16", "bfloat16"; None: the base's).
      DType: string option
      /// Output format (None: Mixtral when it fits, as mergekit).
      Format: SparseFormat option
      /// Seed of random gates and expert noise.
      Seed: int64
      /// Accept all-identical experts with a prompt-based gate (mergekit's --i-understand-this-is-not-useful-without-training).
      AllowIdenticalExperts: bool }

/// Sparse upcycling: dense Llama/Mistral/Qwen2 models into a Mixtral / Qwen2-MoE / DeepSeek-MoE checkpoint, the same
/// core job as `mergedsl moe config.yml` (see docs/mergekit.md, "mergekit-moe").
[<RequireQualifiedAccess>]
module Upcycle =
    /// An empty spec: no models, `hidden` gates, two experts per token, the base's dtype, inferred format, seed 42.
    val defaults: SparseMoeSpec
    /// An expert with positive prompts only.
    val expert: model: string -> prompts: string list -> SparseMoeExpert
    /// mergekit's name of a gate mode (`hidden`, `cheap_embed`, ...).
    val gateName: gate: GateInit -> string
    /// The gate mode of a mergekit name; Error names the known ones.
    val parseGate: name: string -> Result<GateInit, string>
    /// The core spec, with every model reference resolved (relative paths against `searchFolders`, then the hub cache).
    /// Raises ArgumentException (one line) for a bad reference or value.
    val toCore: searchFolders: string list -> spec: SparseMoeSpec -> UpcycleSpec
    /// Checks the spec against the models' config.json files and tensor headers (no tensor data is read): the
    /// errors of `mergedsl moe` as one line.
    val validate: spec: SparseMoeSpec -> Result<SparseMoeSpec, string>
    /// Writes the upcycled checkpoint to `output` (atomically; `overwrite` replaces an existing output folder).
    val upscaleToMoE: spec: SparseMoeSpec -> output: string -> overwrite: bool -> UpcycleSummary

/// Farmer-style builder: `sparseMoe { base_model "m"; gate_mode Hidden; expert "a" [ "prompt" ]; experts_per_token 1 }`.
/// `Run` validates the result against the models' configs and headers (raising ArgumentException with a one-line
/// message) before any tensor is read.
type SparseMoeBuilder =
    new: unit -> SparseMoeBuilder
    /// The empty spec.
    member Yield: 'T -> SparseMoeSpec
    /// Validates the finished spec (see Upcycle.validate).
    member Run: spec: SparseMoeSpec -> SparseMoeSpec
    /// The dense base model.
    [<CustomOperation("base_model")>]
    member BaseModel: spec: SparseMoeSpec * model: string -> SparseMoeSpec
    /// The router initialisation.
    [<CustomOperation("gate_mode")>]
    member GateMode: spec: SparseMoeSpec * gate: GateInit -> SparseMoeSpec
    /// Routed experts per token.
    [<CustomOperation("experts_per_token")>]
    member ExpertsPerToken: spec: SparseMoeSpec * k: int -> SparseMoeSpec
    /// Adds a routed expert with positive prompts.
    [<CustomOperation("expert")>]
    member Expert: spec: SparseMoeSpec * model: string * prompts: string list -> SparseMoeSpec
    /// Adds a routed expert given in full.
    [<CustomOperation("add_expert")>]
    member AddExpert: spec: SparseMoeSpec * expert: SparseMoeExpert -> SparseMoeSpec
    /// Adds the shared expert.
    [<CustomOperation("shared_expert")>]
    member SharedExpert: spec: SparseMoeSpec * expert: SparseMoeExpert -> SparseMoeSpec
    /// The output dtype ("float32", "float16", "bfloat16").
    [<CustomOperation("dtype")>]
    member DType: spec: SparseMoeSpec * dtype: string -> SparseMoeSpec
    /// The output format.
    [<CustomOperation("architecture")>]
    member Architecture: spec: SparseMoeSpec * format: SparseFormat -> SparseMoeSpec
    /// The seed of random gates and noise.
    [<CustomOperation("seed")>]
    member Seed: spec: SparseMoeSpec * seed: int64 -> SparseMoeSpec

/// The `sparseMoe { ... }` builder instance.
[<AutoOpen>]
module SparseMoeBuilderInstance =
    /// Builds a validated SparseMoeSpec.
    val sparseMoe: SparseMoeBuilder
