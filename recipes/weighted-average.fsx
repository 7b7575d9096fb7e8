// Weighted average (mergekit's `linear`): theta = sum_i w_i * theta_i / sum_i w_i, one weight per model.
//
//   dotnet fsi recipes/weighted-average.fsx --set weights=1,2,1       prints the plan on the demo zoo
//   dotnet fsi recipes/weighted-average.fsx --model A --model B --out OUT --set weights=0.7,0.3
//   mergedsl run recipes/weighted-average.fsx --model A --model B --out OUT --set weights=0.7,0.3
//
// Parameters (--set): weights (required; comma-separated, in --model order; normalised to sum 1)
#load "load.fsx"
open MergeDsl

let weights = ScriptParams.numbers "weights"
let total = List.sum weights
if total = 0.0 then invalidArg "weights" "--set weights: the weights sum to 0"

let recipe =
    Recipe.experts
    |> Recipe.weighted [ for w in weights -> w / total ]
    |> Recipe.ofTensor
    |> Recipe.named "weighted-average" [ ("weights", System.String.Join(",", weights |> List.map (fun w -> w.ToString("R", System.Globalization.CultureInfo.InvariantCulture)))) ]

handOver recipe
