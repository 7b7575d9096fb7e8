// NuSLERP (mergekit's nuslerp): spherical interpolation of two models at t = w2/(w1 + w2), of the whole flattened tensors or of each row; with task-vectors=true the task vectors are interpolated and the base added back.
//
//   dotnet fsi recipes/nuslerp.fsx                          prints the plan on the demo zoo
//   dotnet fsi recipes/nuslerp.fsx [--base BASE] --model A --model B --out OUT --set weights=1,1 [--set name=value]
//   mergedsl run recipes/nuslerp.fsx [--base BASE] --model A --model B --out OUT --set weights=1,1 [--set name=value]
//
// Parameters (--set): weights (two numbers), row-wise (false), flatten (true), task-vectors (false: no base needed)
#load "load.fsx"
open MergeDsl

let w0, w1 =
    match ScriptParams.numbers "weights" with
    | [ a; b ] -> a, b
    | ws -> failwithf "weights: nuslerp takes two weights, got %d" ws.Length
let flag name dflt = ScriptParams.choice name [ "true"; "false" ] dflt = "true"
let rowWise = flag "row-wise" "false"
let flatten = flag "flatten" "true"
let taskVectors = flag "task-vectors" "false"

let interpolate = Recipe.nuslerpWith (Recipe.constant w0, Recipe.constant w1) rowWise flatten

let recipe =
    (if taskVectors then Recipe.experts |> Recipe.taskVectors |> interpolate |> Recipe.addToBase
     else Recipe.experts |> interpolate)
    |> Recipe.ofTensor
    |> Recipe.named "nuslerp" [ "weights", $"{w0},{w1}"; "row-wise", string rowWise; "flatten", string flatten ]

handOver recipe
