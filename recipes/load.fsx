// Shared prelude of the recipe scripts: `#load "load.fsx"` first thing in a script.
//
// Standalone (`dotnet fsi recipes/ties.fsx ...`) it references the assemblies that
// `dotnet build src/MergeDsl.Cli -c Release` produces, and hands the script's arguments to the
// script host (so `--set name=value` reaches ScriptParams). Inside `mergedsl run recipes/x.fsx`
// the CLI defines MERGEDSL_HOSTED: the script then compiles against the CLI's own, already loaded
// assemblies and the arguments are the CLI's. See docs/cli.md.
#if !MERGEDSL_HOSTED
#r "../src/MergeDsl.Cli/bin/Release/net10.0/TorchSharp.dll"
#r "../src/MergeDsl.Cli/bin/Release/net10.0/MergeDsl.Core.dll"
#r "../src/MergeDsl.Cli/bin/Release/net10.0/MergeDsl.dll"
#r "../src/MergeDsl.Cli/bin/Release/net10.0/MergeDsl.Cli.dll"
MergeDsl.Cli.ScriptHost.init fsi.CommandLineArgs
#endif
