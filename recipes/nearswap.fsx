// NearSwap (mergekit's nearswap): keep the base, but move each entry towards the expert with weight clamp(t / |base - expert|, 0, 1): entries already within t of each other take the expert's value.
//
//   dotnet fsi recipes/nearswap.fsx                          prints the plan on the demo zoo
//   dotnet fsi recipes/nearswap.fsx --base BASE --model A --out OUT --set t=0.001
//   mergedsl run recipes/nearswap.fsx --base BASE --model A --out OUT --set t=0.001
//
// Parameters (--set): t (required by the CLI; 0.5 here when absent)
#load "load.fsx"
open MergeDsl

let t = ScriptParams.float "t" 0.5

let recipe =
    Recipe.experts
    |> Recipe.withBase
    |> Recipe.nearswap (Recipe.constant t)
    |> Recipe.ofTensor
    |> Recipe.named "nearswap" [ "t", string t ]

handOver recipe
