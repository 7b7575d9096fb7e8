namespace MergeDsl

open MergeDsl.Core.Ir

/// An interval of numbers a parameter accepts (bounds may be infinite).
type NumberRange =
    { /// The lower bound (may be -infinity).
      Low: float
      /// Whether the lower bound itself is accepted.
      LowIncluded: bool
      /// The upper bound (may be +infinity).
      High: float
      /// Whether the upper bound itself is accepted.
      HighIncluded: bool }

    /// Whether `x` lies inside.
    member Contains: x: float -> bool
    /// Interval notation, e.g. "(0, 1]".
    member Text: string
    /// Every finite number.
    static member Finite: NumberRange
    /// (0, 1]: densities and kept fractions.
    static member Fraction: NumberRange
    /// [0, 1): fractions that must leave something over (breadcrumbs gamma).
    static member Proper: NumberRange
    /// [0, 1]: interpolation points.
    static member Unit: NumberRange
    /// [0, ∞).
    static member NonNegative: NumberRange

/// What a method parameter accepts on the command line (`--set name=value`) and in configs.
type ParamType =
    /// A finite number in a range.
    | Number of range: NumberRange
    /// A whole number in [low, high].
    | Integer of low: int64 * high: int64
    /// One of these words (compared case-insensitively).
    | Choice of options: string list
    /// Comma-separated finite numbers (at least one).
    | Numbers
    /// Comma-separated words, e.g. module patterns.
    | Words
    /// true/false (also yes/no, on/off, 1/0).
    | Flag
    /// Free text the method checks itself; the string says what it accepts.
    | Text of accepts: string

/// Whether a parameter must be given.
type ParamDefault =
    /// The method cannot run without it.
    | Required
    /// Optional with no default value (the method decides what its absence means).
    | Optional of meaning: string
    /// Optional with this default, written as on the command line.
    | DefaultsTo of value: string

/// One parameter of a method.
type MethodParam =
    { /// The name, as given to `--set name=value`.
      Name: string
      /// What values it takes.
      Type: ParamType
      /// Its default, or that it is required.
      Default: ParamDefault
      /// One line of help.
      Help: string }

/// A method's parameter values, parsed and range-checked against its declaration.
[<Sealed>]
type MethodArgs =
    /// A Number parameter (given or default).
    member Number: name: string -> float
    /// An Integer parameter (given or default).
    member Integer: name: string -> int64
    /// A Choice parameter, lower-cased (given or default).
    member Choice: name: string -> string
    /// A Numbers parameter.
    member Numbers: name: string -> float list
    /// A Words parameter.
    member Words: name: string -> string list
    /// A Flag parameter.
    member Flag: name: string -> bool
    /// A parameter's text, if it was given or has a default.
    member TryText: name: string -> string option
    /// Whether the user gave the parameter (rather than it taking its default).
    member IsGiven: name: string -> bool

/// How many --model inputs a method takes.
type ModelCount =
    /// At least this many.
    | AtLeast of count: int
    /// Exactly this many.
    | Exactly of count: int

/// What a method builds from its arguments.
type MethodBuild =
    /// A static merge recipe.
    | Merge of build: (MethodArgs -> MergeRecipe)
    /// An upscaling of modules into mixture-of-experts modules.
    | Upscaling of build: (MethodArgs -> MoeSpec)

/// One entry of the registry: everything the CLI, scripts, docs and benchmarks know of a method.
type MergeMethod =
    { /// The canonical name (lower-case, dashes).
      Name: string
      /// Other names accepted for it (mergekit's and FusionBench's spellings).
      Aliases: string list
      /// One line: what the method computes.
      Summary: string
      /// Its parameters, in the order they are listed.
      Parameters: MethodParam list
      /// How many --model inputs it takes.
      Models: ModelCount
      /// A check across parameters (e.g. DELLA's density ± epsilon); None when the values fit.
      Constraint: MethodArgs -> string option
      /// How its recipe or MoE spec is built from the arguments.
      Build: MethodBuild }

/// A method resolved from a name and settings.
type ResolvedMethod =
    { /// The registry entry.
      Method: MergeMethod
      /// The parameter values, parsed and checked.
      Args: MethodArgs
      /// What the method built from them.
      Build: BuiltMethod }

/// What resolving a method produced.
and BuiltMethod =
    /// A static merge recipe (its parameters recorded, `seed` included where given).
    | BuiltMerge of recipe: MergeRecipe
    /// An upscaling specification.
    | BuiltUpscaling of spec: MoeSpec

/// The one table of methods. Adding a method is one entry in `all` (see docs/architecture.md).
[<RequireQualifiedAccess>]
module MethodRegistry =
    /// Every method, static merges first, in the order the CLI lists them.
    val all: MergeMethod list
    /// Canonical names of `all`.
    val names: string list
    /// The static merge methods of `all` (those that build a recipe).
    val merges: MergeMethod list
    /// The upscaling methods of `all`.
    val upscalings: MergeMethod list
    /// A method by name or alias (case-insensitive; '_' and '-' alike).
    val tryFind: name: string -> MergeMethod option
    /// Parses and range-checks `settings` against a method's parameters; Error is one line naming
    /// the method, the parameter and the value.
    val parse: method: MergeMethod -> settings: Map<string, string> -> Result<MethodArgs, string>
    /// Finds, checks and builds a method; Error is one line.
    val resolve: name: string -> settings: Map<string, string> -> Result<ResolvedMethod, string>
    /// A static merge recipe by name with text parameters, e.g. byName "ties" (Map ["density", "0.2"]).
    val byName: name: string -> parameters: Map<string, string> -> Result<MergeRecipe, string>
    /// `byName` for callers outside F# (C# benchmarks): the recipe, or ArgumentException with the one-line message.
    val recipe: name: string -> settings: System.Collections.Generic.IReadOnlyDictionary<string, string> -> MergeRecipe
    /// Whether the model count fits the method; Error names the count.
    val checkModels: method: MergeMethod -> models: int -> Result<unit, string>
    /// The Markdown table of every method and parameter (docs/cli.md holds it verbatim).
    val markdownTable: unit -> string
