// Loaded by scripts/checks/packages.sh after `#i "nuget: <local feed>"` and `#r "nuget: MergeDsl, <version>"`
// on a clean HOME and NuGet folder: uses the MergeDsl package the way a recipe script or notebook does, and
// checks that the Debian 12 fix of TorchSharp's native glue reaches the copies such a script and the
// installed tool load. Arguments: a scratch folder, the installed `mergedsl` command, and the tool's own
// libLibTorchSharp.so.
open System
open System.Diagnostics
open System.IO
open System.IO.Compression
open System.Text
open MergeDsl
open MergeDsl.Build
open MergeDsl.Core.Checkpoints
open MergeDsl.Core.Compilation
open MergeDsl.Core.Execution
open MergeDsl.Core.Torch

let args = fsi.CommandLineArgs |> Array.skip 1
let work, mergedsl, toolLib =
    match args with
    | [| w; m; l |] -> w, m, l
    | _ -> failwithf "usage: dotnet fsi check.fsx WORK MERGEDSL TOOL_LIB (got %A)" args

let fail fmt = Printf.kprintf (fun s -> eprintfn "FAILED: %s" s; exit 1) fmt
let needsFix = ElfVerneedPatcher.SystemLibStdCxxLacksRequiredVersion()

// TorchSharp's native glue as its package publishes it (still inside the .nupkg; only the extracted copies
// are fixed), and the copies this script's TorchSharp loads from the NuGet folder. Touching anything of
// MergeDsl.Core (as below) runs its initialiser, which fixes those copies before any tensor exists.
let torchAssembly = typeof<TorchSharp.torch>.Assembly.Location
printfn "TorchSharp loaded from %s" torchAssembly
let published =
    let nupkg = Path.Combine(Path.GetDirectoryName torchAssembly, "..", "..", "torchsharp.0.107.0.nupkg")
    use zip = ZipFile.OpenRead nupkg
    use s = zip.GetEntry("runtimes/linux-x64/native/libLibTorchSharp.so").Open()
    use m = new MemoryStream()
    s.CopyTo m
    m.ToArray()
let publishedState =
    let f = Path.Combine(work, "published-libLibTorchSharp.so")
    File.WriteAllBytes(f, published)
    ElfVerneedPatcher.Inspect f
printfn "  as published: %s" (if publishedState = PatchOutcome.Patched then "strong GLIBCXX_3.4.32 requirement" else string publishedState)

// Two tiny experts, written as plain safetensors bytes: [1..6] and [3..8] as 2x3 f32, and a 4-vector.
let writeModel (name: string) (offset: float32) =
    let dir = Path.Combine(work, name)
    Directory.CreateDirectory dir |> ignore
    let w = Array.init 6 (fun i -> float32 (i + 1) + offset)
    let b = Array.init 4 (fun i -> float32 (10 * i) - offset)
    let data = Array.append w b |> Array.collect BitConverter.GetBytes
    let header =
        """{"layer.weight":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},"layer.bias":{"dtype":"F32","shape":[4],"data_offsets":[24,40]}}"""
    let h = Encoding.UTF8.GetBytes header
    File.WriteAllBytes(Path.Combine(dir, "model.safetensors"), Array.concat [ BitConverter.GetBytes(uint64 h.Length); h; data ])
    dir

let e1 = writeModel "e1" 0.0f
let e2 = writeModel "e2" 2.0f

// Merge with the library: the average of the two experts.
let libOut = Path.Combine(work, "average-lib")
do
    use a = Checkpoint.Open e1
    use b = Checkpoint.Open e2
    Merger.ToFolder(Methods.average, MergeInputs.Of(null, a, b), libOut) |> ignore

let read (dir: string) (name: string) =
    use c = Checkpoint.Open dir
    c.RawBytes(name).ToArray() |> Array.chunkBySize 4 |> Array.map (fun x -> BitConverter.ToSingle(x, 0))

let expectWeight = Array.init 6 (fun i -> float32 (i + 1) + 1.0f)
let expectBias = Array.init 4 (fun i -> float32 (10 * i) - 1.0f)
if read libOut "layer.weight" <> expectWeight then fail "library average: layer.weight = %A, expected %A" (read libOut "layer.weight") expectWeight
if read libOut "layer.bias" <> expectBias then fail "library average: layer.bias = %A, expected %A" (read libOut "layer.bias") expectBias
printfn "library: average of two experts written to %s and checked" libOut

let cacheCopies = TorchRuntime.BesideTorchSharp torchAssembly |> Seq.filter File.Exists |> List.ofSeq
if cacheCopies.IsEmpty then fail "no libLibTorchSharp.so beside %s" torchAssembly
for lib in cacheCopies do
    let state = ElfVerneedPatcher.Inspect lib
    printfn "  in the NuGet folder after the merge: %s %A" lib state
    if needsFix && state <> PatchOutcome.AlreadyWeak then fail "%s was not fixed by the library (state %A)" lib state

// The installed tool: give it TorchSharp's copy as published (as a tool packed where no fix was needed would
// ship it), then check it fixes its own copy and merges the same numbers.
File.WriteAllBytes(toolLib, published)
printfn "tool copy reset to TorchSharp's own: %A" (ElfVerneedPatcher.Inspect toolLib)

let toolOut = Path.Combine(work, "average-tool")
let psi = ProcessStartInfo(mergedsl, [ "run"; "average"; "--model"; e1; "--model"; e2; "--out"; toolOut; "--quiet" ])
psi.RedirectStandardOutput <- true
psi.RedirectStandardError <- true
let p = Process.Start psi
let out = p.StandardOutput.ReadToEndAsync()
let err = p.StandardError.ReadToEnd()
p.WaitForExit()
printfn "%s%s" out.Result err
if p.ExitCode <> 0 then fail "mergedsl run average exited with %d" p.ExitCode
for name in [ "layer.weight"; "layer.bias" ] do
    if read toolOut name <> read libOut name then fail "tool and library disagree on %s: %A vs %A" name (read toolOut name) (read libOut name)
let toolState = ElfVerneedPatcher.Inspect toolLib
printfn "tool: mergedsl run average gave the library's numbers; its libLibTorchSharp.so: %A" toolState
if needsFix && toolState <> PatchOutcome.AlreadyWeak then fail "the tool did not fix its own %s" toolLib
printfn "package check passed"
