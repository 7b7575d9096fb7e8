module MergeDsl.Tests.CliTests

open System
open System.IO
open System.Text.Json
open Expecto
open TorchSharp
open MergeDsl.Core.Checkpoints
open MergeDsl.Bench.Demo

/// Runs `mergedsl args` in-process; returns exit code, stdout, stderr.
let mergedsl = MergeDsl.Tests.CliHarness.mergedsl

/// A scratch folder deleted at the end of the test run.
let scratch =
    lazy
        (let d = Directory.CreateTempSubdirectory("mergedsl-cli-tests-").FullName
         AppDomain.CurrentDomain.ProcessExit.Add(fun _ -> try Directory.Delete(d, true) with _ -> ())
         d)

let private fresh (name: string) =
    let p = Path.Combine(scratch.Value, name + "-" + Guid.NewGuid().ToString("N").Substring(0, 8))
    p

/// The demo zoo (base + 3 experts, 40 small tensors each).
let zoo =
    lazy
        (let folder = Path.Combine(scratch.Value, "zoo")
         let models = DemoZoo.Build(folder, DemoZooConfig())
         let find n = (models |> Seq.find (fun m -> m.Name = n)).Folder
         find "base", [ find (DemoZoo.ExpertName 1); find (DemoZoo.ExpertName 2); find (DemoZoo.ExpertName 3) ])

/// Writes a checkpoint folder from name -> tensor.
let writeModel (folder: string) (tensors: (string * torch.Tensor) list) =
    CheckpointWriter.WriteAll(folder, readOnlyDict tensors, CheckpointWriterOptions())

/// A tiny base/expert pair where one expert can be tampered with.
let tinyModel (seed: int) =
    torch.manual_seed (int64 seed) |> ignore
    [ "layers.0.weight", torch.randn([| 4L; 3L |]); "layers.0.bias", torch.randn([| 4L |]) ]

let loadAll (folder: string) =
    use cp = Checkpoint.Open folder
    [ for t in cp.Tensors -> t.Name, (cp.Load t.Name).clone() ] |> Map.ofList

/// Same shape and bit-for-bit equal values.
let identical (a: torch.Tensor) (b: torch.Tensor) =
    a.shape = b.shape && a.dtype = b.dtype && a.eq(b).all().item<bool>()

let private oneLine (err: string) = err.Trim().Split('\n').Length = 1

let private baseAndExperts n =
    let b, es = zoo.Value
    [ "--base"; b ] @ (es |> List.truncate n |> List.collect (fun e -> [ "--model"; e ]))

let private expectBadCode (expected: int option) (args: string list) (culprit: string) =
    let out = fresh "bad-out"
    let code, _, err = mergedsl (args @ [ "--out"; out ])
    Expect.notEqual code 0 $"exit code for {culprit}"
    match expected with
    | Some c -> Expect.equal code c $"exit code for {culprit} ({err})"
    | None -> ()
    Expect.isTrue (oneLine err) $"one line: {err}"
    Expect.stringContains err culprit "message names the culprit"
    Expect.isFalse (Directory.Exists out || File.Exists out) "nothing at --out"
    Expect.isEmpty (Directory.GetDirectories(scratch.Value, Path.GetFileName out + "*")) "no temporary folder left"

let private expectBad args culprit = expectBadCode None args culprit

/// A bad command line: exit 2 before anything is opened.
let private expectUsage args culprit = expectBadCode (Some 2) args culprit

[<Tests>]
let tests =
    testSequenced
    <| testList "Cli" [
        testList "run, every built-in method" [
            for m in MergeDsl.MethodRegistry.merges ->
                let name = m.Name
                test name {
                    let b, es = zoo.Value
                    let count = match m.Models with MergeDsl.Exactly n -> n | MergeDsl.AtLeast _ -> 3
                    // The pair methods (slerp, nuslerp) take two models and no base; the others read a base.
                    let withBase = match m.Models with MergeDsl.Exactly 2 -> [] | _ -> [ "--base"; b ]
                    let inputs = withBase @ (es |> List.truncate count |> List.collect (fun e -> [ "--model"; e ]))
                    let sets = MergeDsl.Tests.Registry.requiredSettings m count |> List.collect (fun (k, v) -> [ "--set"; $"{k}={v}" ])
                    let out = fresh name
                    let code, stdout, err = mergedsl ([ "run"; name ] @ inputs @ sets @ [ "--out"; out; "--json" ])
                    Expect.equal code 0 $"exit 0 ({err})"
                    let summary = JsonDocument.Parse(stdout).RootElement
                    Expect.equal (summary.GetProperty("recipe").GetString()) name "json summary names the recipe"
                    use cp = Checkpoint.Open out
                    use baseCp = Checkpoint.Open b
                    Expect.equal (cp.Tensors |> Seq.map (fun t -> t.Name) |> Set.ofSeq) (baseCp.Tensors |> Seq.map (fun t -> t.Name) |> Set.ofSeq) "same tensors as the base"
                    for t in cp.Tensors do
                        use x = cp.Load t.Name
                        Expect.isTrue (torch.isfinite(x).all().item<bool>()) $"{t.Name} finite"
                    Expect.equal cp.Metadata["mergedsl.method"] name "recipe in the safetensors metadata"
                    Expect.isTrue (cp.Metadata.ContainsKey "mergedsl.recipe") "expression in the metadata"
                    let card = File.ReadAllText(Path.Combine(out, "README.md"))
                    Expect.stringContains card $"`{name}` recipe" "model card names the recipe"
                    Expect.stringContains card MergeDsl.Version.Current "model card names the version"
                    Expect.stringContains card es[0] "model card names the inputs"
                    Expect.isTrue (File.Exists(Path.Combine(out, "config.json"))) "config.json copied through"
                }
        ]

        test "the output's mergedsl.recipe is the canonical expression, not the method name (regression: the model card overwrote it)" {
            let b, es = zoo.Value
            let out = fresh "recipe-metadata"
            let code, _, err = mergedsl ([ "run"; "ties"; "--base"; b; "--model"; es[0]; "--model"; es[1]; "--out"; out; "--quiet" ])
            Expect.equal code 0 err
            use cp = Checkpoint.Open out
            let expected = match MergeDsl.MethodRegistry.byName "ties" Map.empty with Ok r -> r.Describe() | Error e -> failwith e
            Expect.equal cp.Metadata["mergedsl.recipe"] expected "canonical expression"
            Expect.equal cp.Metadata["mergedsl.method"] "ties" "method name"
            Expect.equal cp.Metadata["mergedsl.recipe_source"] "built-in" "where the recipe came from"
        }

        test "passthrough copies the base; weighted-average weighs the experts" {
            let b, es = zoo.Value
            let out = fresh "passthrough"
            let code, _, err = mergedsl [ "run"; "passthrough"; "--base"; b; "--out"; out; "--quiet" ]
            Expect.equal code 0 err
            let x, y = loadAll out, loadAll b
            for KeyValue(k, v) in y do
                Expect.isTrue (identical v x[k]) $"{k} copied"
            let out = fresh "weighted"
            let code, _, err = mergedsl [ "run"; "linear"; "--model"; es[0]; "--model"; es[1]; "--set"; "weights=3,1"; "--out"; out; "--quiet" ]
            Expect.equal code 0 err
            let w, e0, e1 = loadAll out, loadAll es[0], loadAll es[1]
            for KeyValue(k, v) in w do
                if v.is_floating_point () then
                    let expected = (e0[k].to_type(torch.float64) * 0.75 + e1[k].to_type(torch.float64) * 0.25).to_type(v.dtype)
                    Expect.isTrue (torch.allclose(v, expected, rtol = 1e-6, atol = 1e-6)) $"{k} = 0.75·e1 + 0.25·e2"
        }

        test "task-arithmetic with one expert and lambda=1 gives that expert; average of one model is that model" {
            let b, es = zoo.Value
            let out = fresh "ta1"
            let code, _, err = mergedsl [ "run"; "task-arithmetic"; "--base"; b; "--model"; es[0]; "--set"; "lambda=1"; "--out"; out; "--quiet" ]
            Expect.equal code 0 err
            let merged, expert = loadAll out, loadAll es[0]
            for KeyValue(k, v) in expert do
                Expect.isTrue (merged[k].allclose(v, 1e-6, 1e-6)) k
            let out2 = fresh "avg1"
            let code, _, err = mergedsl [ "run"; "average"; "--model"; es[1]; "--out"; out2; "--quiet" ]
            Expect.equal code 0 err
            let merged, expert = loadAll out2, loadAll es[1]
            for KeyValue(k, v) in expert do
                Expect.isTrue (identical merged[k] v) k
        }

        test "slerp t=0 gives the first model" {
            let _, es = zoo.Value
            let out = fresh "slerp0"
            let code, _, err = mergedsl [ "run"; "slerp"; "--model"; es[2]; "--model"; es[0]; "--set"; "t=0"; "--out"; out; "--quiet" ]
            Expect.equal code 0 err
            let merged, first = loadAll out, loadAll es[2]
            for KeyValue(k, v) in first do
                Expect.isTrue (merged[k].allclose(v, 1e-5, 1e-6)) k
        }

        test "an .fsx recipe through FCS gives the built-in method's output" {
            let script = Path.Combine(RecipeScriptTests.recipesDir, "dare-ties.fsx")
            let args = baseAndExperts 3 @ [ "--set"; "density=0.5"; "--seed"; "7"; "--quiet" ]
            let a, b = fresh "fsx", fresh "builtin"
            let code, _, err = mergedsl ([ "run"; script ] @ args @ [ "--out"; a ])
            Expect.equal code 0 err
            let code, _, err = mergedsl ([ "run"; "dare-ties" ] @ args @ [ "--out"; b ])
            Expect.equal code 0 err
            let x, y = loadAll a, loadAll b
            Expect.equal (Map.keys x |> Set.ofSeq) (Map.keys y |> Set.ofSeq) "same tensors"
            for KeyValue(k, v) in x do
                Expect.isTrue (identical v y[k]) $"{k} identical"
            let card = File.ReadAllText(Path.Combine(a, "README.md"))
            Expect.stringContains card "dare-ties.fsx" "card names the script"
        }

        testList "bad input: one line, non-zero exit, nothing at --out" [
            test "unknown recipe" { expectBad ([ "run"; "tiez" ] @ baseAndExperts 2) "tiez" }
            test "unknown parameter" { expectBad ([ "run"; "ties" ] @ baseAndExperts 2 @ [ "--set"; "lambada=1" ]) "lambada" }
            test "density 0" { expectBad ([ "run"; "ties" ] @ baseAndExperts 2 @ [ "--set"; "density=0" ]) "density" }
            test "density above 1" { expectBad ([ "run"; "dare-ties" ] @ baseAndExperts 2 @ [ "--set"; "density=1.5" ]) "density" }
            test "bad parameter value" { expectBad ([ "run"; "ties" ] @ baseAndExperts 2 @ [ "--set"; "scope=galaxy" ]) "scope" }
            test "slerp with three models" { expectBad ([ "run"; "slerp" ] @ baseAndExperts 3) "slerp takes exactly 2" }
            // Parameter ranges come from the method registry: refused with exit 2 before any input is opened.
            test "breadcrumbs gamma 1" { expectUsage ([ "run"; "breadcrumbs" ] @ baseAndExperts 2 @ [ "--set"; "gamma=1" ]) "gamma" }
            test "della epsilon 5" { expectUsage ([ "run"; "della" ] @ baseAndExperts 2 @ [ "--set"; "epsilon=5" ]) "epsilon" }
            test "della density ± epsilon" { expectUsage ([ "run"; "della" ] @ baseAndExperts 2 @ [ "--set"; "density=0.9"; "--set"; "epsilon=0.2" ]) "density ± epsilon" }
            test "weighted-average without weights" { expectUsage ([ "run"; "weighted-average" ] @ baseAndExperts 2) "'weights' is required" }
            test "wemoe router depth 3" { expectUsage ([ "run"; "wemoe" ] @ baseAndExperts 2 @ [ "--set"; "router-depth=3" ]) "router-depth" }
            test "task vectors without --base" {
                let _, es = zoo.Value
                expectBad [ "run"; "ties"; "--model"; es[0]; "--model"; es[1] ] "--base"
            }
            test "input folder that is not a checkpoint" {
                let _, es = zoo.Value
                let empty = fresh "empty"
                Directory.CreateDirectory empty |> ignore
                File.WriteAllText(Path.Combine(empty, "config.json"), "{}")
                expectBad [ "run"; "ties"; "--base"; empty; "--model"; es[0] ] empty
            }
            test "corrupt safetensors file" {
                let _, es = zoo.Value
                let bad = fresh "corrupt"
                Directory.CreateDirectory bad |> ignore
                File.WriteAllBytes(Path.Combine(bad, "model.safetensors"), Array.create 16 0xFFuy)
                expectBad [ "run"; "average"; "--model"; es[0]; "--model"; bad ] "model.safetensors"
            }
            test "missing input folder" { expectBad ([ "run"; "average"; "--model"; "/nonexistent/mergedsl-model" ]) "/nonexistent/mergedsl-model" }
            test "shape mismatch between models" {
                let b, e = fresh "shape-base", fresh "shape-expert"
                writeModel b (tinyModel 1)
                writeModel e [ "layers.0.weight", torch.randn([| 4L; 5L |]); "layers.0.bias", torch.randn([| 4L |]) ]
                expectBad [ "run"; "task-arithmetic"; "--base"; b; "--model"; e ] "layers.0.weight"
            }
            test "tensor missing from one expert" {
                let b, e1, e2 = fresh "miss-base", fresh "miss-e1", fresh "miss-e2"
                writeModel b (tinyModel 1)
                writeModel e1 (tinyModel 2)
                writeModel e2 (tinyModel 3 |> List.filter (fun (n, _) -> n <> "layers.0.bias"))
                expectBad [ "run"; "ties"; "--base"; b; "--model"; e1; "--model"; e2 ] "layers.0.bias"
            }
            test "dtype that cannot merge" {
                let b, e = fresh "dt-base", fresh "dt-expert"
                writeModel b (tinyModel 1)
                writeModel e [ "layers.0.weight", torch.ones([| 4L; 3L |], dtype = torch.int32); "layers.0.bias", torch.randn([| 4L |]) ]
                expectBad [ "run"; "task-arithmetic"; "--base"; b; "--model"; e ] "layers.0.weight"
            }
            test "NaN/Inf produced by the merge" {
                expectBad ([ "run"; "task-arithmetic" ] @ baseAndExperts 2 @ [ "--set"; "lambda=1e308" ]) "NaN/Inf"
            }
            test "unknown --dtype" { expectBad ([ "run"; "average" ] @ baseAndExperts 2 @ [ "--dtype"; "int4" ]) "--dtype" }
            test "an .fsx script with an unknown --set" {
                let script = Path.Combine(RecipeScriptTests.recipesDir, "task-arithmetic.fsx")
                expectBad ([ "run"; script ] @ baseAndExperts 2 @ [ "--set"; "density=0.5" ]) "density"
            }
        ]

        test "--allow-nonfinite keeps NaN/Inf" {
            let out = fresh "nonfinite"
            let code, _, err = mergedsl ([ "run"; "task-arithmetic" ] @ baseAndExperts 2 @ [ "--set"; "lambda=1e308"; "--allow-nonfinite"; "--out"; out; "--quiet" ])
            Expect.equal code 0 err
            let m = loadAll out
            Expect.isTrue (m |> Map.exists (fun _ t -> not (torch.isfinite(t).all().item<bool>()))) "non-finite values kept"
        }

        test "an existing --out is refused and left untouched; --force replaces it only when mergedsl wrote it" {
            let out = fresh "exists"
            Directory.CreateDirectory out |> ignore
            File.WriteAllText(Path.Combine(out, "keep.txt"), "mine")
            let code, _, err = mergedsl ([ "run"; "average" ] @ baseAndExperts 2 @ [ "--out"; out ])
            Expect.notEqual code 0 "refused"
            Expect.stringContains err "--out" "names --out"
            Expect.equal (File.ReadAllText(Path.Combine(out, "keep.txt"))) "mine" "untouched"
            let code, _, err = mergedsl ([ "run"; "average" ] @ baseAndExperts 2 @ [ "--out"; out; "--force"; "--quiet" ])
            Expect.equal code 2 "a folder mergedsl did not write is not replaced"
            Expect.stringContains err "not written by mergedsl" err
            Expect.equal (File.ReadAllText(Path.Combine(out, "keep.txt"))) "mine" "untouched by --force"
            File.Delete(Path.Combine(out, "keep.txt"))
            let code, _, err = mergedsl ([ "run"; "average" ] @ baseAndExperts 2 @ [ "--out"; out; "--force"; "--quiet" ])
            Expect.equal code 0 err
            Expect.isTrue (File.Exists(Path.Combine(out, "model.safetensors"))) "an empty folder is replaced"
        }

        test "--dtype bf16 and --shard-size shard the output" {
            let out = fresh "bf16"
            let code, _, err = mergedsl ([ "run"; "average" ] @ baseAndExperts 2 @ [ "--dtype"; "bf16"; "--shard-size"; "20KB"; "--out"; out; "--quiet" ])
            Expect.equal code 0 err
            Expect.isTrue (File.Exists(Path.Combine(out, "model.safetensors.index.json"))) "sharded"
            use cp = Checkpoint.Open out
            Expect.isTrue (cp.Tensors |> Seq.forall (fun t -> t.DType = DType.BF16)) "bf16"
        }

        test "version, and no command" {
            let code, out, _ = mergedsl [ "version" ]
            Expect.equal code 0 "version exits 0"
            Expect.stringContains out MergeDsl.Version.Current "prints the version"
            let code, _, err = mergedsl []
            Expect.equal code 2 "no command is a usage error"
            Expect.stringContains err "no command" "says so"
        }

        test "plan: phases, op counts, bytes" {
            let b, es = zoo.Value
            let code, stdout, err = mergedsl ([ "plan"; "ties" ] @ baseAndExperts 3 @ [ "--set"; "scope=global"; "--json" ])
            Expect.equal code 0 err
            let j = JsonDocument.Parse(stdout).RootElement
            let inputBytes =
                b :: es |> List.sumBy (fun f -> use cp = Checkpoint.Open f in cp.TotalBytes)
            Expect.equal (j.GetProperty("bytesReadMerge").GetInt64()) inputBytes "every input byte read once by the merge pass"
            use baseCp = Checkpoint.Open b
            Expect.equal (j.GetProperty("bytesWritten").GetInt64()) baseCp.TotalBytes "one model written"
            Expect.equal (j.GetProperty("tensors").GetInt32()) baseCp.Tensors.Count "tensor count"
            let phases = [ for p in j.GetProperty("phases").EnumerateArray() -> p.GetString() ]
            Expect.equal phases.Length 2 "statistics pass then merge"
            Expect.stringStarts phases[0] "statistics" "global top-k needs a statistics pass"
            let ops = j.GetProperty("opCounts")
            Expect.equal (ops.GetProperty("Load").GetInt32()) (4 * baseCp.Tensors.Count) "each input tensor loaded once"
            Expect.isTrue (ops.TryGetProperty("GlobalTopK") |> fst) "global top-k op"
            Expect.isGreaterThan (j.GetProperty("estimatedPeakBytes").GetInt64()) 0L "peak estimate"
            let code, text, err = mergedsl ([ "plan"; "task-arithmetic" ] @ baseAndExperts 2)
            Expect.equal code 0 err
            Expect.stringContains text "phases:" "human output"
            Expect.stringContains text "estimated peak memory" "human output"
            Expect.isFalse (text.Contains "statistics:") "no statistics pass for task arithmetic"
        }
    ]
