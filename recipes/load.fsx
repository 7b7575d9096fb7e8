// Shared prelude of the recipe scripts: `#load "load.fsx"` first thing in a script. A recipe script
// itself uses only the DSL (`MergeDsl`: Recipe, Methods, ScriptParams); this prelude is the one place
// that knows who runs it, and gives the script `handOver`, its last line.
//
// Standalone (`dotnet fsi recipes/ties.fsx ...`) it references the assemblies that
// `dotnet build src/MergeDsl.Cli -c Release` produces and hands the script's arguments to the CLI's
// script host (so `--set name=value` reaches ScriptParams, and `handOver` plans or merges). Inside
// `mergedsl run recipes/x.fsx` the CLI defines MERGEDSL_HOSTED: the script then compiles against the
// CLI's own, already loaded assemblies, without the CLI's, and `handOver` does nothing (the CLI reads the
// script's `recipe` value). See docs/cli.md.
[<AutoOpen>]
module RecipePrelude
#if !MERGEDSL_HOSTED
#r "../src/MergeDsl.Cli/bin/Release/net10.0/TorchSharp.dll"
#r "../src/MergeDsl.Cli/bin/Release/net10.0/MergeDsl.Core.dll"
#r "../src/MergeDsl.Cli/bin/Release/net10.0/MergeDsl.dll"
#r "../src/MergeDsl.Cli/bin/Release/net10.0/MergeDsl.Cli.dll"
MergeDsl.Cli.ScriptHost.init fsi.CommandLineArgs
#endif

/// The last line of a recipe script: hands its recipe to whoever runs the script. Standalone, it plans
/// the recipe (no models given) or merges (`--base/--model/--out`) like `mergedsl run`.
let handOver (recipe: MergeDsl.Core.Ir.MergeRecipe) : unit =
#if MERGEDSL_HOSTED
    ignore recipe
#else
    MergeDsl.Cli.ScriptHost.main recipe
#endif
