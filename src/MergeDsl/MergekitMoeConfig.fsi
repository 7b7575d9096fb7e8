namespace MergeDsl

/// mergekit-moe configurations (`mergekit-moe config.yml out`): the YAML keys `base_model`, `gate_mode`,
/// `experts_per_token`, `experts` (each `source_model`, `positive_prompts`, `negative_prompts`, `noise_scale`,
/// `residual_scale`), `shared_experts` (the same keys), `dtype` and `architecture`, read into a SparseMoeSpec.
/// Unknown keys are refused (mergekit ignores them), so a misspelt key is not silently dropped.
[<RequireQualifiedAccess>]
module MergekitMoeConfig =
    /// Whether YAML text is a mergekit-moe configuration (it has `experts` and no `merge_method`/`models`/`slices`).
    val isMoeConfig: text: string -> bool
    /// Parses YAML text; `file` names it in messages and anchors relative model paths (its folder first, then the
    /// working directory; then the hub cache). Error is one line: "file:line: message".
    val parse: file: string -> text: string -> Result<SparseMoeSpec, string>
    /// Reads and parses a configuration file.
    val load: file: string -> Result<SparseMoeSpec, string>
    /// The same upcycle as an F# script: a `sparseMoe { ... }` expression bound to `spec`, then `Upcycle.upscaleToMoE`.
    val toFSharp: spec: SparseMoeSpec -> string
