// SLERP: spherical interpolation between exactly two models (t = 0 gives the first); linear when they are (anti)parallel.
//
//   dotnet fsi recipes/slerp.fsx                          prints the plan on the demo zoo
//   dotnet fsi recipes/slerp.fsx --model A --model B --out OUT [--set name=value]
//   mergedsl run recipes/slerp.fsx --model A --model B --out OUT [--set name=value]
//
// Parameters (--set): t (0.5)
#load "load.fsx"
open MergeDsl

let t = ScriptParams.float "t" 0.5

let recipe =
    Recipe.experts
    |> Recipe.slerp t
    |> Recipe.ofTensor
    |> Recipe.named "slerp" [ ("t", string t) ]

handOver recipe
