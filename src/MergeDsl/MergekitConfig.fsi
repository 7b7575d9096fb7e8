namespace MergeDsl

open MergeDsl.Core.Ir

/// Where the output's tokenizer comes from (mergekit's `tokenizer_source` / `tokenizer.source`).
type MergekitTokenizerSource =
    /// The base model's vocabulary; other models' embedding rows are realigned to it by token.
    | BaseTokenizer
    /// The union of every model's vocabulary (the base's first).
    | UnionTokenizer
    /// This model folder's (full path) tokenizer.
    | ModelTokenizer of path: string

/// Where one token's embedding row comes from (mergekit's `tokenizer.tokens.<token>.source`).
type MergekitTokenSource =
    /// That model's own row of the token (`source: <model>`; a model folder, full path).
    | TokenOfModel of model: string
    /// Row `id` of that model's matrices (`source: {kind: model_token, model: <model>, token_id: id}`).
    | TokenIdOfModel of model: string * id: int
    /// The row of another token of that model (`source: {kind: model_token, model: <model>, token: <text>}`).
    | OtherTokenOfModel of model: string * token: string
    /// Zeros (`source: {kind: zero}`).
    | ZeroRow

/// One per-token embedding setting (`tokenizer.tokens`).
type MergekitTokenSetting =
    { /// The token (added to the output vocabulary when it lacks it, as mergekit does).
      Token: string
      /// Where its row comes from.
      Source: MergekitTokenSource
      /// Every model takes the row, also models that have the token (`force`).
      Force: bool }

/// The output tokenizer a configuration asks for.
type MergekitTokenizer =
    { /// Which vocabulary.
      Source: MergekitTokenizerSource
      /// Round the embedding rows up to a multiple of this (`tokenizer.pad_to_multiple_of`).
      PadToMultipleOf: int option
      /// Per-token settings (`tokenizer.tokens`), in the order written.
      Tokens: MergekitTokenSetting list }

/// One source of a `slices` entry: layers First … Last − 1 of a model folder (full path); Line is its line in the YAML.
type MergekitLayerRange =
    { /// The model folder (or reference) whose layers the slice reads.
      Model: string
      /// The first layer read.
      First: int
      /// The end of the range (exclusive, as mergekit's `layer_range`).
      Last: int
      /// The YAML line of the source, for error messages.
      Line: int }

/// A mergekit merge configuration (`mergekit-yaml` YAML), parsed and checked: every key, method,
/// parameter name, value and model folder, before any model file is opened. It translates into an
/// ordinary MergeDsl recipe (the same IR) that follows mergekit's rules (see docs/mergekit.md).
[<Sealed>]
type MergekitConfig =
    /// The YAML file the configuration came from (as given).
    member File: string
    /// mergekit's method name, e.g. "ties".
    member Method: string
    /// The base model folder (full path) the recipe reads as the base, if the method uses one.
    member Base: string option
    /// The other model folders (full paths), in the order of `models`: the recipe's experts.
    member Models: string list
    /// Output dtype: `out_dtype`, else `dtype` ("f32", "f16" or "bf16"); None keeps the inputs' dtype.
    member OutDType: string option
    /// The output tokenizer (`tokenizer_source` or `tokenizer`), if the configuration names one.
    member Tokenizer: MergekitTokenizer option
    /// `chat_template`: "auto" (the most common template among the models) or the template text.
    member ChatTemplate: string option
    /// The layer ranges of every `slices` source, in order (empty for a `models` configuration).
    member LayerRanges: MergekitLayerRange list
    /// The output's number of layers for a `slices` configuration (the sum of the slices' lengths), else None.
    member OutputLayers: int option
    /// True when some parameter is a gradient, so the recipe depends on the number of layers.
    member UsesLayers: bool

/// Reading mergekit configurations and translating them into recipes.
[<RequireQualifiedAccess>]
module MergekitConfig =
    /// The mergekit methods a configuration may name.
    val supportedMethods: string list
    /// Parses YAML text; `file` names it in messages and anchors relative model paths (its folder
    /// first, then the working directory). Error is one line: "file:line: message".
    val parse: file: string -> text: string -> Result<MergekitConfig, string>
    /// Reads and parses a configuration file.
    val load: file: string -> Result<MergekitConfig, string>
    /// The recipe for models of `layerCount` transformer layers (only gradients depend on it);
    /// Error is one line (e.g. a model without a required weight for some tensors).
    val toRecipe: layerCount: int -> config: MergekitConfig -> Result<MergeRecipe, string>
    /// The same recipe as F# script text (binds `recipe`; runs with `mergedsl run file.fsx`).
    val toFSharp: layerCount: int -> config: MergekitConfig -> Result<string, string>
    /// A gradient's value at t ∈ [0, 1] exactly as mergekit computes it: scaled = t·(n−1),
    /// i0 = ⌊scaled⌋, linear between anchors i0 and min(i0 + 1, n − 1).
    val interpolate: anchors: float list -> t: float -> float
    /// mergekit's t of a tensor: i/(L−1) for layer i of L (1 when L = 1); 0 outside the layers.
    val layerT: layerCount: int -> layer: int option -> float
