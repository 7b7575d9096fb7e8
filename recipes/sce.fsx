// SCE (Wan et al., FuseChat, 2024; mergekit's sce): Select the elements of largest variance across the task vectors, Calculate per-model weights from their mean squares, Erase entries against the elected sign, merge and add to the base.
//
//   dotnet fsi recipes/sce.fsx                          prints the plan on the demo zoo
//   dotnet fsi recipes/sce.fsx --base BASE --model A --model B --out OUT [--set name=value]
//   mergedsl run recipes/sce.fsx --base BASE --model A --model B --out OUT [--set name=value]
//
// Parameters (--set): select-topk (1.0)
#load "load.fsx"
open MergeDsl

let selectTopK = ScriptParams.float "select-topk" 1.0

let recipe =
    Recipe.experts
    |> Recipe.taskVectors
    |> Recipe.sce (Recipe.constant selectTopK)
    |> Recipe.addToBase
    |> Recipe.ofTensor
    |> Recipe.named "sce" [ "select-topk", string selectTopK ]

handOver recipe
