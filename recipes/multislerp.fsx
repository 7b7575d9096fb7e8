// Multi-SLERP (mergekit's multislerp): barycentric interpolation of the experts on the hypersphere (unit vectors averaged with the weights and renormalised, scaled by the weighted mean norm); with task-vectors=true of θi - θ0, the base added back.
//
//   dotnet fsi recipes/multislerp.fsx                          prints the plan on the demo zoo
//   dotnet fsi recipes/multislerp.fsx [--base BASE] --model A --model B --out OUT [--set name=value]
//   mergedsl run recipes/multislerp.fsx [--base BASE] --model A --model B --out OUT [--set name=value]
//
// Parameters (--set): weights (one per expert; default equal), normalize-weights (true), task-vectors (false)
#load "load.fsx"
open MergeDsl

let weights =
    (ScriptParams.string "weights" "").Split(',', System.StringSplitOptions.RemoveEmptyEntries ||| System.StringSplitOptions.TrimEntries)
    |> Seq.map (fun w -> Recipe.constant (float w))
    |> List.ofSeq
let flag name dflt = ScriptParams.choice name [ "true"; "false" ] dflt = "true"
let normalize = flag "normalize-weights" "true"
let taskVectors = flag "task-vectors" "false"

let interpolate = Recipe.multislerpWith normalize 1e-8 weights

let recipe =
    (if taskVectors then Recipe.experts |> Recipe.taskVectors |> interpolate |> Recipe.addToBase
     else Recipe.experts |> interpolate)
    |> Recipe.ofTensor
    |> Recipe.named "multislerp" [ "normalize-weights", string normalize; "task-vectors", string taskVectors ]

handOver recipe
