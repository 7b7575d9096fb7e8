/// Parameters that a recipe script reads by name. Whoever evaluates a script (the CLI, or
/// recipes/load.fsx under `dotnet fsi`) fills them from `--set name=value` first. Every name a script
/// reads is recorded, so a `--set` that no script line asked for is an error ("unknown parameter")
/// instead of being silently ignored. One set of values per process: scripts are evaluated one at a time.
module MergeDsl.ScriptParams

/// Replaces the current parameter values (and forgets which names were read).
val reset: settings: seq<string * string> -> unit
/// Names that were set but never read by the script.
val unread: unit -> string list
/// A floating-point parameter, or its default.
val float: name: string -> defaultValue: float -> float
/// An integer parameter, or its default.
val int: name: string -> defaultValue: int -> int
/// A text parameter, or its default.
val string: name: string -> defaultValue: string -> string
/// A text parameter that must be one of `choices` (compared case-insensitively).
val choice: name: string -> choices: string list -> defaultValue: string -> string
/// A required list of comma-separated finite numbers (e.g. one weight per model).
val numbers: name: string -> float list
/// Parses `name=value` as written after `--set`.
val parseSetting: text: string -> string * string
/// The `density` parameter: a fraction in (0, 1].
val density: defaultValue: float -> float
