// Builds a random CLIP-layout zoo on disk for timing `mergedsl upscale/adapt/eval` (weights are random:
// speed and memory do not depend on their values). Usage, from the repository root after a Release build:
//   dotnet fsi docs/moe-bench.fsx OUT LAYERS WIDTH EXPERTS IMAGE PATCH CHANNELS
#r "../src/MergeDsl.Cli/bin/Release/net10.0/TorchSharp.dll"
#r "../src/MergeDsl.Cli/bin/Release/net10.0/MergeDsl.Core.dll"
open System.IO
open TorchSharp
open MergeDsl.Core.Models
open MergeDsl.Core.Evaluation

let args = fsi.CommandLineArgs |> Array.skip 1
let out, layers, width, experts, image, patch, channels =
    args.[0], int args.[1], int args.[2], int args.[3], int args.[4], int args.[5], int args.[6]
let cfg =
    ClipVisionConfig(HiddenSize = width, IntermediateSize = 4 * width, NumHiddenLayers = layers,
                     NumAttentionHeads = max 1 (width / 32), ImageSize = image, PatchSize = patch,
                     NumChannels = channels, ProjectionDim = width)
torch.manual_seed 1L |> ignore
let save name (m: ClipVisionModel) heads = ClipModelFolder.Save(Path.Combine(out, name), m, heads, overwrite = true)
let baseModel = new ClipVisionModel(cfg)
save "base" baseModel (readOnlyDict [])
for i in 0 .. experts - 1 do
    use e = new ClipVisionModel(cfg)
    use _ = torch.no_grad ()
    for KeyValue(n, p) in e.ParametersByName() do
        p.copy_(baseModel.ParametersByName().[n] + torch.randn(p.shape).mul(torch.tensor 0.01f)) |> ignore
    let task = $"task{i}"
    let head = new ClassificationHead(task, torch.nn.functional.normalize(torch.randn([| 10L; int64 width |]), dim = -1L))
    save task e (readOnlyDict [ task, head ])
    Directory.CreateDirectory(Path.Combine(out, "data")) |> ignore
    TaskDataFolder.Save(Path.Combine(out, "data", task + ".safetensors"),
                        torch.randint(0L, 256L, [| 512L; int64 channels; int64 image; int64 image |], dtype = torch.uint8),
                        torch.randint(0L, 10L, [| 512L |]))
printfn "wrote %s: %d layers, width %d, MLP %d, %d experts, %dx%d/%d x%d channels" out layers width (4 * width) experts image image patch channels
