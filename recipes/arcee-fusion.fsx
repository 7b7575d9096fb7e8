// Arcee Fusion (mergekit's arcee_fusion): importance = |expert - base| x KL(softmax(expert) || softmax(base)) per row; entries whose importance is at least median + 1.5 IQR take the expert's value, the rest keep the base.
//
//   dotnet fsi recipes/arcee-fusion.fsx                          prints the plan on the demo zoo
//   dotnet fsi recipes/arcee-fusion.fsx --base BASE --model A --out OUT
//   mergedsl run recipes/arcee-fusion.fsx --base BASE --model A --out OUT
//
// Parameters: none
#load "load.fsx"
open MergeDsl

let recipe =
    Recipe.experts
    |> Recipe.withBase
    |> Recipe.arceeFusion
    |> Recipe.ofTensor
    |> Recipe.named "arcee-fusion" []

handOver recipe
