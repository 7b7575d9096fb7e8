/// LoRA adapters: PEFT's update W + scale·B·A checked by hand, extraction by truncated SVD (full rank then apply
/// gives the fine-tune back), `model+adapter` references in run and YAML, and bad adapters as one line.
module MergeDsl.Tests.LoraTests

open System
open System.IO
open Expecto
open TorchSharp
open MergeDsl.Core.Checkpoints
open MergeDsl.Core.Lora
open MergeDsl.Tests.CheckpointFixtures
open MergeDsl.Tests.CliHarness

let private tensor (rows: float32 list list) =
    let flat: float32[] = rows |> List.concat |> Array.ofList
    torch.tensor(flat).reshape(int64 rows.Length, int64 rows.Head.Length)

let private write (folder: string) (tensors: (string * torch.Tensor) list) =
    CheckpointWriter.WriteAll(folder, readOnlyDict tensors, CheckpointWriterOptions())

/// A PEFT adapter folder: adapter_config.json with `config`, adapter_model.safetensors with `tensors`.
let private writeAdapter (folder: string) (config: string) (tensors: (string * torch.Tensor) list) =
    CheckpointWriter.WriteAll(folder, readOnlyDict tensors, CheckpointWriterOptions(SingleFileName = LoraAdapter.WeightsFileName))
    File.WriteAllText(Path.Combine(folder, LoraAdapter.ConfigFileName), config)

let private rows (t: torch.Tensor) =
    let a = t.to_type(torch.float64).data<float>().ToArray()
    let cols = int t.shape[1]
    [ for r in 0 .. a.Length / cols - 1 -> [ for c in 0 .. cols - 1 -> a[r * cols + c] ] ]

let private applied (model: string) (adapter: string) (name: string) =
    let src = new LoraAdaptedSource(Checkpoint.Open model, LoraAdapter.Open adapter)
    use _ = src
    use t = src.Load name
    rows t

let private w = "model.layers.0.self_attn.q_proj.weight"
let private aName = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
let private bName = "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"

/// A tiny Llama-named pair: base and a fine-tune differing in every tensor but the norm.
let private pair (dir: TempDir) =
    use scope = torch.NewDisposeScope()
    torch.manual_seed 7L |> ignore
    let shapes =
        [ "model.embed_tokens.weight", [| 10L; 4L |]; "model.layers.0.self_attn.q_proj.weight", [| 4L; 4L |]
          "model.layers.0.mlp.up_proj.weight", [| 6L; 4L |]; "model.layers.0.mlp.down_proj.weight", [| 4L; 6L |]
          "model.layers.0.input_layernorm.weight", [| 4L |]; "lm_head.weight", [| 10L; 4L |] ]
    let b = [ for n, s in shapes -> n, torch.randn(s) ]
    use tenth = (0.1).ToScalar()
    let m = [ for n, (t: torch.Tensor) in b -> n, (if n.Contains "norm" then t.clone() else t.add(torch.randn(t.shape).mul(tenth))) ]
    let bf, mf = dir.File "base", dir.File "tuned"
    write bf b
    write mf m
    File.WriteAllText(Path.Combine(bf, "config.json"), """{"model_type": "llama"}""")
    bf, mf

let private maxDiff (a: string) (b: string) (names: string list) =
    use ca = Checkpoint.Open a
    use cb = Checkpoint.Open b
    names |> List.map (fun n -> (use x = ca.Load n in use y = cb.Load n in x.sub(y).abs().max().item<float32>())) |> List.max

let private expectOneLine (code: int, _: string, err: string) (parts: string list) =
    Expect.equal code 2 $"usage error: {err}"
    Expect.equal (err.Trim().Split('\n').Length) 1 $"one line: {err}"
    for p in parts do Expect.stringContains err p "names it"

[<Tests>]
let tests =
    testSequenced <| testList "LoRA" [
        test "apply by hand: W = [[1,2],[3,4]], A = [[1,0]], B = [[2],[1]], alpha 2, r 1 → W + 2·B·A = [[5,2],[5,4]]" {
            use dir = new TempDir()
            write (dir.File "m") [ w, tensor [ [ 1f; 2f ]; [ 3f; 4f ] ] ]
            writeAdapter (dir.File "a") """{"peft_type": "LORA", "r": 1, "lora_alpha": 2, "target_modules": ["q_proj"]}"""
                [ aName, tensor [ [ 1f; 0f ] ]; bName, tensor [ [ 2f ]; [ 1f ] ] ]
            Expect.equal (applied (dir.File "m") (dir.File "a") w) [ [ 5.0; 2.0 ]; [ 5.0; 4.0 ] ] "hand-checked"
        }
        test "rsLoRA scales by alpha/√r, plain LoRA by alpha/r; fan_in_fan_out transposes" {
            use dir = new TempDir()
            write (dir.File "m") [ w, tensor [ [ 1f; 2f ]; [ 3f; 4f ] ] ]
            // r = 4, B·A = I: plain scale 4/4 = 1, rsLoRA 4/√4 = 2.
            let a = tensor [ [ 1f; 0f ]; [ 0f; 1f ]; [ 0f; 0f ]; [ 0f; 0f ] ]
            let b = tensor [ [ 1f; 0f; 0f; 0f ]; [ 0f; 1f; 0f; 0f ] ]
            writeAdapter (dir.File "plain") """{"r": 4, "lora_alpha": 4, "target_modules": ["q_proj"]}""" [ aName, a; bName, b ]
            writeAdapter (dir.File "rs") """{"r": 4, "lora_alpha": 4, "use_rslora": true, "target_modules": "model\\.layers\\.\\d+\\.self_attn\\.q_proj"}""" [ aName, a; bName, b ]
            Expect.equal (applied (dir.File "m") (dir.File "plain") w) [ [ 2.0; 2.0 ]; [ 3.0; 5.0 ] ] "W + I"
            Expect.equal (applied (dir.File "m") (dir.File "rs") w) [ [ 3.0; 2.0 ]; [ 3.0; 6.0 ] ] "W + 2I"
            // fan_in_fan_out: W stored [in = 1, out = 2]; B·A = [[2],[1]]·[[1]] = [[2],[1]] → transposed [[2, 1]].
            write (dir.File "conv") [ w, tensor [ [ 10f; 20f ] ] ]
            writeAdapter (dir.File "fifo") """{"r": 1, "lora_alpha": 1, "fan_in_fan_out": true}""" [ aName, tensor [ [ 1f ] ]; bName, tensor [ [ 2f ]; [ 1f ] ] ]
            Expect.equal (applied (dir.File "conv") (dir.File "fifo") w) [ [ 12.0; 21.0 ] ] "transposed update"
        }
        test "extract at full rank then apply gives the fine-tune; rank 2 keeps the top-2 singular energy" {
            use dir = new TempDir()
            let bf, mf = pair dir
            let out = dir.File "adapter"
            let code, stdout, err = mergedsl [ "lora"; "extract"; "--base"; bf; "--model"; mf; "--rank"; "8"; "--out"; out ]
            Expect.equal code 0 err
            Expect.stringContains stdout "energy 100.0000%" "full rank keeps all the energy"
            Expect.stringContains stdout "1 embedding tensor(s) differ from the base: model.embed_tokens.weight" "embeddings reported"
            let cfg = File.ReadAllText(Path.Combine(out, LoraAdapter.ConfigFileName))
            Expect.stringContains cfg "\"rank_pattern\"" "modules smaller than r get their own rank"
            let linear = [ w; "model.layers.0.mlp.up_proj.weight"; "model.layers.0.mlp.down_proj.weight"; "lm_head.weight" ]
            // Apply through a merge: `average` of one model+adapter is that model with the adapter applied.
            let merged = dir.File "merged"
            let code, _, err = mergedsl [ "run"; "average"; "--model"; $"{bf}+{out}"; "--out"; merged; "--quiet" ]
            Expect.equal code 0 err
            Expect.isLessThan (maxDiff merged mf linear) 1e-5f "adapted Linears equal the fine-tune"
            Expect.equal (maxDiff merged bf [ "model.embed_tokens.weight"; "model.layers.0.input_layernorm.weight" ]) 0f "the rest is the base"
            Expect.isTrue (File.Exists(Path.Combine(merged, "config.json"))) "config copied from the model of model+adapter"
            // Rank 2: the energy printed is Σ top-2 σ² / Σ σ² of ΔW, checked against torch's singular values.
            let out2 = dir.File "adapter2"
            let code, stdout, err = mergedsl [ "lora"; "extract"; "--base"; bf; "--model"; mf; "--rank"; "2"; "--out"; out2; "--json" ]
            Expect.equal code 0 err
            let doc = Text.Json.JsonDocument.Parse stdout
            let up = doc.RootElement.GetProperty("modules").EnumerateArray() |> Seq.find (fun m -> m.GetProperty("module").GetString() = "model.layers.0.mlp.up_proj")
            use cb = Checkpoint.Open bf
            use cm = Checkpoint.Open mf
            use s = torch.linalg.svdvals((cm.Load "model.layers.0.mlp.up_proj.weight").to_type(torch.float64).sub((cb.Load "model.layers.0.mlp.up_proj.weight").to_type(torch.float64)))
            let s2 = s.square()
            let expected = s2.narrow(0, 0, 2).sum().item<float>() / s2.sum().item<float>()
            Expect.floatClose Accuracy.high (up.GetProperty("energy").GetDouble()) expected "energy"
            Expect.isLessThan expected 0.999 "rank 2 loses some"
            use ad = LoraAdapter.Open out2
            Expect.equal (ad.Modules |> Seq.map (fun m -> m.Rank) |> Seq.distinct |> List.ofSeq) [ 2 ] "rank 2 everywhere"
        }
        test "a YAML config takes model+adapter" {
            use dir = new TempDir()
            let bf, mf = pair dir
            let out = dir.File "adapter"
            let code, _, err = mergedsl [ "lora"; "extract"; "--base"; bf; "--model"; mf; "--rank"; "6"; "--out"; out; "--quiet" ]
            Expect.equal code 0 err
            let yaml = dir.File "merge.yml"
            File.WriteAllText(yaml, "merge_method: task_arithmetic\nbase_model: base\nmodels:\n  - model: base+adapter\n    parameters:\n      weight: 1.0\n")
            let merged = dir.File "merged"
            let code, _, err = mergedsl [ "run"; yaml; "--out"; merged; "--quiet" ]
            Expect.equal code 0 err
            Expect.isLessThan (maxDiff merged mf [ w; "lm_head.weight" ]) 1e-5f "base + 1·(base+adapter − base) = the fine-tune"
        }
        test "bad adapters are one line each, exit 2, nothing written" {
            use dir = new TempDir()
            let m = dir.File "m"
            write m [ w, tensor [ [ 1f; 2f ]; [ 3f; 4f ] ] ]
            let run (adapter: string) = mergedsl [ "run"; "average"; "--model"; $"{m}+{adapter}"; "--out"; dir.File "out" ]
            let noConfig = dir.File "noconfig"
            Directory.CreateDirectory noConfig |> ignore
            expectOneLine (run noConfig) [ "no adapter_config.json" ]
            let noWeights = dir.File "noweights"
            Directory.CreateDirectory noWeights |> ignore
            File.WriteAllText(Path.Combine(noWeights, LoraAdapter.ConfigFileName), "{}")
            File.WriteAllText(Path.Combine(noWeights, "adapter_model.bin"), "")
            expectOneLine (run noWeights) [ "no adapter_model.safetensors"; "mergedsl convert" ]
            let good = [ aName, tensor [ [ 1f; 0f ] ]; bName, tensor [ [ 2f ]; [ 1f ] ] ]
            writeAdapter (dir.File "rank") """{"r": 8, "lora_alpha": 16}""" good
            expectOneLine (run (dir.File "rank")) [ "rank mismatch"; "r = 8" ]
            writeAdapter (dir.File "unknown") """{"r": 1, "lora_alpha": 1}"""
                [ "base_model.model.model.layers.9.mlp.gate_proj.lora_A.weight", tensor [ [ 1f; 0f ] ]
                  "base_model.model.model.layers.9.mlp.gate_proj.lora_B.weight", tensor [ [ 2f ]; [ 1f ] ] ]
            expectOneLine (run (dir.File "unknown")) [ "adapts module 'model.layers.9.mlp.gate_proj'"; "has no tensor" ]
            writeAdapter (dir.File "target") """{"r": 1, "lora_alpha": 1, "target_modules": ["v_proj"]}""" good
            expectOneLine (run (dir.File "target")) [ "not among adapter_config.json's target_modules" ]
            writeAdapter (dir.File "shape") """{"r": 1, "lora_alpha": 1}""" [ aName, tensor [ [ 1f; 0f; 0f ] ]; bName, tensor [ [ 2f ]; [ 1f ] ] ]
            expectOneLine (run (dir.File "shape")) [ "B·A is [2, 3]" ]
            writeAdapter (dir.File "dora") """{"r": 1, "lora_alpha": 1, "use_dora": true}""" good
            expectOneLine (run (dir.File "dora")) [ "DoRA" ]
            Expect.isFalse (Directory.Exists(dir.File "out")) "nothing written"
        }
    ]
