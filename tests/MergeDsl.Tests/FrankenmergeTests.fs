/// mergekit `slices` (frankenmerges and per-slice merges) on tiny Llama models: the output's tensor names,
/// bytes and config.json checked against the inputs by hand, the imported F# recipe, bad slices as one-line
/// errors before any tensor is read, tied embeddings, and config.json rewriting.
module MergeDsl.Tests.FrankenmergeTests

open System
open System.IO
open System.Text.Json.Nodes
open Expecto
open TorchSharp
open MergeDsl.Core.Checkpoints
open MergeDsl.Core.Models.Decoder
open MergeDsl.Tests.CheckpointFixtures

let private mergedsl = MergeDsl.Tests.CliHarness.mergedsl
let private loadAll = MergeDsl.Tests.CliTests.loadAll

let private llama layers hidden tied =
    DecoderConfig(Family = DecoderFamily.Llama, VocabSize = 40, HiddenSize = hidden, IntermediateSize = 24, NumHiddenLayers = layers,
                  NumAttentionHeads = 4, NumKeyValueHeads = 2, HeadDim = hidden / 4, MaxPositionEmbeddings = 64, RopeTheta = 10000.0,
                  TieWordEmbeddings = tied)

/// Saves a random tiny Llama (3 layers unless told) as dir/name.
let private model (dir: TempDir) (name: string) (cfg: DecoderConfig) (seed: int64) =
    use m = DecoderModelFolder.Random(cfg, seed, 0.3)
    DecoderModelFolder.Save(dir.File name, m)
    loadAll (dir.File name)

/// The per-layer tensor suffixes of a Llama layer.
let private layerSuffixes =
    [ "input_layernorm.weight"; "post_attention_layernorm.weight"; "self_attn.q_proj.weight"; "self_attn.k_proj.weight"
      "self_attn.v_proj.weight"; "self_attn.o_proj.weight"; "mlp.gate_proj.weight"; "mlp.up_proj.weight"; "mlp.down_proj.weight" ]

let private layer (i: int) (suffix: string) = $"model.layers.{i}.{suffix}"

let private config (folder: string) = JsonNode.Parse(File.ReadAllText(Path.Combine(folder, "config.json"))).AsObject()

let private writeYaml (dir: TempDir) (text: string) =
    let path = dir.File "config.yml"
    File.WriteAllText(path, text)
    path

let private run (path: string) (out: string) =
    let code, _, err = mergedsl [ "run"; path; "--out"; out; "--quiet" ]
    Expect.equal code 0 $"exit code ({err})"
    loadAll out

let private same (a: torch.Tensor) (b: torch.Tensor) what = Expect.isTrue (MergeDsl.Tests.CliTests.identical a b) what

let private close (a: torch.Tensor) (b: torch.Tensor) what =
    let diff = a.to_type(torch.ScalarType.Float64).sub(b.to_type(torch.ScalarType.Float64)).abs().max().item<float>()
    Expect.isLessThanOrEqual diff 1e-6 $"{what} (max |diff| {diff})"

let private frankenYaml =
    """slices:
  - sources:
      - model: a
        layer_range: [0, 2]
  - sources:
      - model: b
        layer_range: [1, 3]
merge_method: passthrough
dtype: float32
"""

/// Runs a config expected to fail: exit 2, one line containing every fragment, nothing written.
let private expectBad (dir: TempDir) (yaml: string) (fragments: string list) =
    let path = writeYaml dir yaml
    let out = dir.File "out-bad"
    let code, _, err = mergedsl [ "run"; path; "--out"; out; "--quiet" ]
    Expect.equal code 2 $"usage error ({err})"
    Expect.equal (err.Trim().Split('\n').Length) 1 $"one line: {err}"
    for f in fragments do
        Expect.stringContains err f "names the fault"
    Expect.isFalse (Directory.Exists out) "nothing written"

/// `mergedsl import` of the config, run as a script with `args`, gives the YAML's bytes; returns the script.
let private importMatches (dir: TempDir) (path: string) (args: string list) =
    let code, script, err = mergedsl [ "import"; path ]
    Expect.equal code 0 $"import ({err})"
    let fsx = Path.ChangeExtension(path, ".fsx")
    File.WriteAllText(fsx, script)
    let fromYaml = run path (dir.File "out-yaml")
    let code, _, err = mergedsl ([ "run"; fsx ] @ args @ [ "--out"; dir.File "out-fsx"; "--quiet" ])
    Expect.equal code 0 $"run fsx ({err}):\n{script}"
    let fromScript = loadAll (dir.File "out-fsx")
    Expect.equal (Map.keys fromScript |> Set.ofSeq) (Map.keys fromYaml |> Set.ofSeq) "same tensors"
    for KeyValue(n, t) in fromYaml do
        Expect.isTrue (MergeDsl.Tests.CliTests.identical fromScript[n] t) $"{n}: script and YAML agree"
    script

[<Tests>]
let tests =
    testSequenced <| testList "Frankenmerge" [
        test "passthrough slices: layers [0, 2) of A then [1, 3) of B, renumbered 0-3, embeddings from A, norm and head from B" {
            use dir = new TempDir()
            let a = model dir "a" (llama 3 16 false) 1L
            let b = model dir "b" (llama 3 16 false) 2L
            let out = dir.File "out"
            let got = run (writeYaml dir frankenYaml) out
            let expected =
                [ yield "model.embed_tokens.weight", a["model.embed_tokens.weight"]
                  for s in layerSuffixes do
                      yield layer 0 s, a[layer 0 s]
                      yield layer 1 s, a[layer 1 s]
                      yield layer 2 s, b[layer 1 s]
                      yield layer 3 s, b[layer 2 s]
                  yield "model.norm.weight", b["model.norm.weight"]
                  yield "lm_head.weight", b["lm_head.weight"] ]
            Expect.equal (got |> Map.keys |> Set.ofSeq) (expected |> List.map fst |> Set.ofList) "tensor names: 4 layers"
            for name, t in expected do
                same got[name] t $"{name}: the source's bytes"
            let cfg, cfgA = config out, config (dir.File "a")
            Expect.equal (cfg["num_hidden_layers"].GetValue<int>()) 4 "num_hidden_layers rewritten"
            cfgA.Remove "num_hidden_layers" |> ignore
            cfg.Remove "num_hidden_layers" |> ignore
            Expect.isTrue (JsonNode.DeepEquals(cfg, cfgA)) "every other key as in A's config.json"
            use loaded = DecoderModelFolder.Load out
            Expect.equal loaded.Config.NumHiddenLayers 4 "the decoder runtime loads the 4-layer model"
        }

        test "a merged slice: linear over A[0, 2) and B[1, 3) with a weight gradient, then 2·A[2, 3); hand-checked" {
            use dir = new TempDir()
            let a = model dir "a" (llama 3 16 false) 3L
            let b = model dir "b" (llama 3 16 false) 4L
            let yaml =
                """merge_method: linear
parameters:
  normalize: false
slices:
  - sources:
      - model: a
        layer_range: [0, 2]
        parameters:
          weight: 1.0
      - model: b
        layer_range: [1, 3]
        parameters:
          weight: [0, 1]
  - sources:
      - model: a
        layer_range: [2, 3]
    parameters:
      weight: 2.0
"""
            let got = run (writeYaml dir yaml) (dir.File "out")
            let f (t: torch.Tensor) = t.to_type(torch.ScalarType.Float64)
            // In-slice t: 0 and 1 over the first slice's two layers (weight of B 0 then 1); t = 1 for the
            // one-layer slice; t = 0 outside the layers (embeddings: first slice, norm and head: last slice).
            for s in layerSuffixes do
                close got[layer 0 s] (f a[layer 0 s]) $"layer 0 {s} = A0 + 0·B1"
                close got[layer 1 s] (f(a[layer 1 s]).add(f b[layer 2 s])) $"layer 1 {s} = A1 + 1·B2"
                close got[layer 2 s] (f(a[layer 2 s]).mul(torch.tensor 2.0)) $"layer 2 {s} = 2·A2"
            close got["model.embed_tokens.weight"] (f a["model.embed_tokens.weight"]) "embeddings: A + 0·B (first slice, t = 0)"
            close got["model.norm.weight"] (f(a["model.norm.weight"]).mul(torch.tensor 2.0)) "norm: 2·A (last slice)"
            close got["lm_head.weight"] (f(a["lm_head.weight"]).mul(torch.tensor 2.0)) "lm_head: 2·A (last slice)"
            let cfg = config (dir.File "out")
            Expect.equal (cfg["num_hidden_layers"].GetValue<int>()) 3 "3 layers"
            importMatches dir (dir.File "config.yml") [ "--model"; dir.File "a"; "--model"; dir.File "b" ] |> ignore
        }

        test "sources of different offsets in one TIES slice: the base's layers and B's two layers further on" {
            use dir = new TempDir()
            let bas = model dir "base" (llama 3 16 false) 5L
            let b = model dir "b" (llama 4 16 false) 6L
            let yaml =
                """merge_method: task_arithmetic
base_model: base
slices:
  - sources:
      - model: base
        layer_range: [1, 3]
      - model: b
        layer_range: [2, 4]
        parameters:
          weight: 0.5
"""
            let got = run (writeYaml dir yaml) (dir.File "out")
            let f (t: torch.Tensor) = t.to_type(torch.ScalarType.Float64)
            for s in layerSuffixes do
                for j in 0 .. 1 do
                    let expected = f(bas[layer (j + 1) s]).add(f(b[layer (j + 2) s]).sub(f bas[layer (j + 1) s]).mul(torch.tensor 0.5))
                    close got[layer j s] expected $"layer {j} {s} = base{j + 1} + 0.5·(B{j + 2} − base{j + 1})"
            let e = "model.embed_tokens.weight"
            close got[e] (f(bas[e]).add(f(b[e]).sub(f bas[e]).mul(torch.tensor 0.5))) "embeddings merged from the first slice's sources"
            let script = importMatches dir (dir.File "config.yml") [ "--base"; dir.File "base"; "--model"; dir.File "b" ]
            Expect.stringContains script "Recipe.shiftLayers" "shifted sources in the script"
        }

        test "import prints shiftLayers/withLayers, and the script gives the YAML's bytes" {
            use dir = new TempDir()
            model dir "a" (llama 3 16 false) 7L |> ignore
            model dir "b" (llama 3 16 false) 8L |> ignore
            let path = writeYaml dir frankenYaml
            let script = importMatches dir path [ "--model"; dir.File "a"; "--model"; dir.File "b" ]
            Expect.stringContains script "Recipe.shiftLayers (-1)" "B's layers 1-2 become 2-3"
            Expect.stringContains script "Recipe.withLayers 4" "4 output layers"
            let code, planText, err = mergedsl [ "plan"; path; "--tensors"; "40" ]
            Expect.equal code 0 $"plan ({err})"
            Expect.stringContains planText "model.layers.3.mlp.down_proj.weight" "the plan lists the renumbered layers"
            Expect.stringContains planText "model.layers.2.mlp.down_proj.weight" "and the reads from B's layer 2"
        }

        test "overlapping slices repeat layers (A[0, 2) + A[1, 3): 4 layers, A1 twice)" {
            use dir = new TempDir()
            let a = model dir "a" (llama 3 16 false) 9L
            let got = run (writeYaml dir (frankenYaml.Replace("model: b", "model: a"))) (dir.File "out")
            for s in layerSuffixes do
                same got[layer 1 s] a[layer 1 s] $"layer 1 {s}"
                same got[layer 2 s] a[layer 1 s] $"layer 2 {s} repeats A1"
                same got[layer 3 s] a[layer 2 s] $"layer 3 {s}"
        }

        test "bad slices are one-line errors before any tensor is read" {
            use dir = new TempDir()
            model dir "a" (llama 3 16 false) 10L |> ignore
            model dir "b" (llama 3 16 false) 11L |> ignore
            model dir "wide" (llama 3 24 false) 12L |> ignore
            expectBad dir (frankenYaml.Replace("[1, 3]", "[1, 4]")) [ "config.yml:6:"; "layer_range [1, 4] is outside"; "has 3 layers" ]
            expectBad dir (frankenYaml.Replace("[1, 3]", "[2, 2]")) [ "config.yml:7:"; "slices[1].sources[0].layer_range: [2, 2] is empty" ]
            expectBad dir (frankenYaml.Replace("[1, 3]", "[1, x]")) [ "config.yml:7:"; "'x' is not a number" ]
            expectBad dir (frankenYaml.Replace("model: b", "model: wide")) [ "model.layers.2."; "shape [24"; "differs" ]
            expectBad
                dir
                "merge_method: linear\nslices:\n  - sources:\n      - model: a\n        layer_range: [0, 2]\n      - model: b\n        layer_range: [0, 3]\n"
                [ "config.yml:3: slices[0]: every source of a slice must span the same number of layers (got 2, 3)" ]
            expectBad dir (frankenYaml + "models:\n  - model: a\n") [ "give either models or slices" ]
            expectBad dir (frankenYaml.Replace("layer_range: [0, 2]", "layer_rang: [0, 2]")) [ "config.yml:4:"; "unknown key 'layer_rang'" ]
            expectBad
                dir
                "merge_method: passthrough\nslices:\n  - sources:\n      - model: a\n        layer_range: [0, 2]\n      - model: b\n        layer_range: [0, 2]\n"
                [ "slices[0]: passthrough takes exactly one source per slice (2 given)" ]
            expectBad
                dir
                "merge_method: ties\nbase_model: a\nslices:\n  - sources:\n      - model: b\n        layer_range: [0, 2]\n        parameters: {weight: 1}\n"
                [ "slices[0]: ties needs its base_model among the sources of the slice" ]
        }

        test "a slice's own base_model: task vectors against it for its layers (and the last slice's norm and head); hand-checked" {
            use dir = new TempDir()
            let bas = model dir "base" (llama 3 16 false) 13L
            let b = model dir "b" (llama 3 16 false) 14L
            let yaml =
                """merge_method: task_arithmetic
base_model: base
slices:
  - sources:
      - model: base
        layer_range: [0, 2]
      - model: b
        layer_range: [0, 2]
        parameters: {weight: 0.5}
  - base_model: b
    sources:
      - model: b
        layer_range: [2, 3]
      - model: base
        layer_range: [2, 3]
        parameters: {weight: 0.25}
"""
            let got = run (writeYaml dir yaml) (dir.File "out")
            let f (t: torch.Tensor) = t.to_type(torch.ScalarType.Float64)
            let ta (o: torch.Tensor) (x: torch.Tensor) (w: float) = f(o).add(f(x).sub(f o).mul(torch.tensor w))
            for s in layerSuffixes do
                for j in 0 .. 1 do
                    close got[layer j s] (ta bas[layer j s] b[layer j s] 0.5) $"layer {j} {s} = base + 0.5·(B − base)"
                close got[layer 2 s] (ta b[layer 2 s] bas[layer 2 s] 0.25) $"layer 2 {s} = B + 0.25·(base − B): the slice's base is B"
            let e, n = "model.embed_tokens.weight", "model.norm.weight"
            close got[e] (ta bas[e] b[e] 0.5) "embeddings: the first slice (base)"
            close got[n] (ta b[n] bas[n] 0.25) "final norm: the last slice (base_model B)"
            let script = importMatches dir (dir.File "config.yml") [ "--base"; dir.File "base"; "--model"; dir.File "b" ]
            Expect.stringContains script "Recipe.taskVectorsFrom" "task vectors against the slice's base"
        }

        test "modules: {default: ...} is the top level's slices; residual_weight, other modules, digit filters on shifted sources refused" {
            use dir = new TempDir()
            model dir "a" (llama 3 16 false) 15L |> ignore
            model dir "b" (llama 3 16 false) 16L |> ignore
            let plain = run (writeYaml dir frankenYaml) (dir.File "out-plain")
            let indented = frankenYaml.Replace("merge_method: passthrough\n", "").Replace("dtype: float32\n", "").Split('\n') |> Array.map (fun l -> if l = "" then l else "    " + l)
            let moduleYaml = "merge_method: passthrough\ndtype: float32\nmodules:\n  default:\n" + String.Join("\n", indented)
            let viaModule = run (writeYaml dir moduleYaml) (dir.File "out-module")
            for KeyValue(n, t) in plain do
                same viaModule[n] t $"{n}: modules.default gives the same bytes"
            expectBad dir (moduleYaml.Replace("  default:", "  text_decoder:")) [ "modules: 'text_decoder': multi-module architectures"; "'default'" ]
            expectBad dir (moduleYaml + "models:\n  - model: a\n") [ "give exactly one of models, slices and modules" ]
            expectBad dir (frankenYaml.Replace("  - sources:\n      - model: b", "  - residual_weight: 0.5\n    sources:\n      - model: b"))
                [ "config.yml:5:"; "slices[1].residual_weight: mergekit declares this key but never reads it" ]
            let linear (filter: string) =
                $"merge_method: linear\nslices:\n  - sources:\n      - model: a\n        layer_range: [0, 2]\n        parameters: {{weight: 1}}\n      - model: b\n        layer_range: [1, 3]\n        parameters:\n          weight:\n            - filter: {filter}\n              value: 2\n            - value: 1\n"
            expectBad dir (linear "layers.1.") [ "filter 'layers.1.' of a per-model parameter has a digit"; "input names (layer 1 on)"; "output names (layer 0 on)" ]
            run (writeYaml dir (linear "self_attn")) (dir.File "out-filter") |> ignore
        }

        test "tied embeddings: merges keep the single matrix and tie_word_embeddings, frankenmerges too, and the runtime loads them" {
            use dir = new TempDir()
            let a = model dir "a" (llama 3 16 true) 13L
            let b = model dir "b" (llama 3 16 true) 14L
            Expect.isFalse (a.ContainsKey "lm_head.weight") "a tied model stores no lm_head"
            let linear = "merge_method: linear\nmodels:\n  - model: a\n    parameters: {weight: 1}\n  - model: b\n    parameters: {weight: 3}\n"
            let got = run (writeYaml dir linear) (dir.File "out-linear")
            Expect.isFalse (got.ContainsKey "lm_head.weight") "no lm_head written"
            let e = "model.embed_tokens.weight"
            close got[e] (a[e].to_type(torch.ScalarType.Float64).mul(torch.tensor 0.25).add(b[e].to_type(torch.ScalarType.Float64).mul(torch.tensor 0.75))) "embeddings = ¼A + ¾B"
            let cfg = config (dir.File "out-linear")
            Expect.isTrue (cfg["tie_word_embeddings"].GetValue<bool>()) "still tied"
            use merged = DecoderModelFolder.Load(dir.File "out-linear")
            Expect.isTrue merged.Config.TieWordEmbeddings "the runtime loads it tied"
            let franken = run (writeYaml dir frankenYaml) (dir.File "out-franken")
            Expect.isFalse (franken.ContainsKey "lm_head.weight") "frankenmerge of tied models: no lm_head"
            same franken[e] a[e] "embeddings from the first slice's model"
            use loaded = DecoderModelFolder.Load(dir.File "out-franken")
            Expect.equal loaded.Config.NumHiddenLayers 4 "4 layers, tied"
        }

        test "config.json follows out_dtype; an unchanged config is copied byte for byte" {
            use dir = new TempDir()
            model dir "a" (llama 3 16 false) 15L |> ignore
            model dir "b" (llama 3 16 false) 16L |> ignore
            let linear = "merge_method: linear\nmodels:\n  - model: a\n    parameters: {weight: 1}\n  - model: b\n    parameters: {weight: 1}\n"
            let got = run (writeYaml dir (linear + "out_dtype: bfloat16\n")) (dir.File "out-bf16")
            Expect.isTrue (got.Values |> Seq.forall (fun t -> t.dtype = torch.ScalarType.BFloat16)) "weights in bf16"
            let cfg = config (dir.File "out-bf16")
            Expect.equal (cfg["torch_dtype"].GetValue<string>()) "bfloat16" "torch_dtype rewritten"
            run (writeYaml dir linear) (dir.File "out-f32") |> ignore
            Expect.equal (File.ReadAllText(dir.File "out-f32/config.json")) (File.ReadAllText(dir.File "a/config.json")) "copied unchanged"
        }

        test "ConfigRewrite changes top-level keys only, and only those present" {
            let json = """{"num_hidden_layers": 2, "vocab_size": 40, "torch_dtype": "float32", "text_config": {"num_hidden_layers": 2}}"""
            let layout = [| struct ("model.embed_tokens.weight", DType.BF16, [| 44L; 8L |]) |]
            let text = ConfigRewrite.Rewrite(json, "config.json", layout, Nullable 5)
            let o = JsonNode.Parse(text).AsObject()
            Expect.equal (o["num_hidden_layers"].GetValue<int>()) 5 "layers"
            Expect.equal (o["vocab_size"].GetValue<int>()) 44 "vocab from the embedding rows"
            Expect.equal (o["torch_dtype"].GetValue<string>()) "bfloat16" "dtype"
            let nested = o["text_config"]
            Expect.equal (nested["num_hidden_layers"].GetValue<int>()) 2 "nested config untouched"
            Expect.isFalse (o.ContainsKey "dtype") "absent keys are not added"
            let same = ConfigRewrite.Rewrite("""{"vocab_size": 44}""", "config.json", layout, Nullable())
            Expect.isNull same "nothing to change: null"
        }
    ]
