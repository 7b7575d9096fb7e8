/// mergekit-moe (`mergedsl moe config.yml`, `sparseMoe { ... }`): router rows of each gate mode against hand/independent
/// computations, the written Mixtral / Qwen2-MoE / DeepSeek-MoE folders (config keys, names, tokenizer), and bad input
/// refused with one line before anything is written.
module MergeDsl.Tests.MoeUpcycleTests

open System
open System.IO
open System.Text.Json.Nodes
open System.Collections.Generic
open Expecto
open TorchSharp
open MergeDsl
open MergeDsl.Core.Checkpoints
open MergeDsl.Core.Models.Decoder
open MergeDsl.Core.Models.Decoder.Tokenizers
open MergeDsl.Core.Moe.Sparse.Upcycling
open MergeDsl.Tests.CheckpointFixtures
open MergeDsl.Tests.CliHarness

/// Llama with the byte tokenizer's vocabulary, hidden 16, MLP 24, two layers, untied head.
let llamaWith (layers: int) (intermediate: int) =
    DecoderConfig(Family = DecoderFamily.Llama, VocabSize = ByteTokenizer.VocabSize, HiddenSize = 16, IntermediateSize = intermediate,
                  NumHiddenLayers = layers, NumAttentionHeads = 4, NumKeyValueHeads = 2, HeadDim = 4, MaxPositionEmbeddings = 64,
                  BosTokenId = Nullable ByteTokenizer.Bos, EosTokenId = Nullable ByteTokenizer.Eos)

/// The fixtures' configuration: two layers, MLP 24.
let byteLlama = llamaWith 2 24

/// Writes a random model (weights N(0, 0.3²)) with the byte tokenizer into dir/name; returns the folder.
let writeModel (dir: string) (name: string) (cfg: DecoderConfig) (seed: int64) =
    let folder = Path.Combine(dir, name)
    use m = DecoderModelFolder.Random(cfg, seed, 0.3)
    DecoderModelFolder.Save(folder, m, DecoderModelFolder.ByteTokenizerFiles())
    folder

/// A base and three experts (seeds 1, 2, 3, 4) under dir.
let private zoo (dir: string) =
    writeModel dir "base" byteLlama 1L, [ for i in 2L .. 4L -> writeModel dir $"e{i}" byteLlama i ]

let private tensorsOf (folder: string) =
    use ck = Checkpoint.Open folder
    ck.Tensors |> Seq.map (fun t -> t.Name, ck.Load(t.Name).to_type(torch.ScalarType.Float32)) |> dict

let private configOf (folder: string) = JsonNode.Parse(File.ReadAllText(Path.Combine(folder, "config.json"))).AsObject()

let private archOf (cfg: JsonObject) = (cfg["architectures"].AsArray()[0]).GetValue<string> ()

let private close (a: torch.Tensor) (b: torch.Tensor) (tol: float) what =
    let d = (a.to_type(torch.ScalarType.Float64) - b.to_type(torch.ScalarType.Float64)).abs().max().item<double> ()
    Expect.isLessThanOrEqual d tol $"{what}: max |difference| {d}"

let private normalise (v: torch.Tensor) = v / v.norm().clamp_min(1e-8)

let private expert model prompts = Upcycle.expert model prompts

/// The residual stream entering layer l at the last token, from the independent loop-based reference: the first l
/// layers, then a final norm of weight 1 and an identity head, so the output is x / rms(x), a positive multiple of x.
let private referenceLayerInput (weights: IDictionary<string, torch.Tensor>) (ids: int[]) (layer: int) =
    let w = Dictionary<string, torch.Tensor>(weights)
    w["model.norm.weight"] <- torch.ones(byteLlama.HiddenSize)
    w["lm_head.weight"] <- torch.eye(int64 byteLlama.HiddenSize)
    let cfg = llamaWith layer 24
    let out = DecoderReference.forward cfg w ids
    torch.tensor(out[out.Length - 1])

let private promptIds (text: string) = Array.append [| ByteTokenizer.Bos |] (Text.Encoding.UTF8.GetBytes text |> Array.map int)

let private writeYaml (dir: string) (text: string) =
    let path = Path.Combine(dir, "moe.yml")
    File.WriteAllText(path, text)
    path

let private expectRefused (dir: string) (yaml: string) (fragment: string) =
    let path = writeYaml dir yaml
    let out = Path.Combine(dir, "out")
    let code, _, err = mergedsl [ "moe"; path; "--out"; out ]
    Expect.equal code 2 $"exit 2 ({err})"
    Expect.stringContains err fragment "names the fault"
    Expect.equal (err.Trim().Split('\n').Length) 1 $"one line: {err}"
    Expect.isFalse (Directory.Exists out) "nothing written"
    Expect.isEmpty (leftoversBeside out) "no temporary folder or lock left"

let private threeExperts (experts: string list) =
    String.Join("\n", experts |> List.mapi (fun i e -> $"  - source_model: {e}\n    positive_prompts: [\"prompt {i} about topic {i}\"]"))

[<Tests>]
let tests =
    testSequenced <| testList "mergekit-moe upcycling" [
        test "hidden gate rows are the normalised residual stream entering each layer at the prompt's last token (independent reference)" {
            use dir = new TempDir()
            let b, es = zoo dir.Path
            let spec = UpcycleSpec(b, ResizeArray [ UpcycleExpert(es[0], [ "abc" ], []); UpcycleExpert(es[1], [ "xyz!" ], []) ], ResizeArray())
            let plan = UpcyclePlan.Make spec
            use gates = UpcycleJob.ComputeGates plan
            Expect.sequenceEqual gates.shape [| 2L; 2L; 16L |] "[layers, experts, hidden]"
            let weights = tensorsOf b
            for l in 0 .. 1 do
                for e, prompt in [ 0, "abc"; 1, "xyz!" ] do
                    let expected = normalise (referenceLayerInput weights (promptIds prompt) l)
                    close gates[int64 l, int64 e] expected 1e-5 $"layer {l} expert {e}"
        }

        test "hidden averages prompts, subtracts negatives, then normalises (layer 0 = embedding rows, by hand)" {
            use dir = new TempDir()
            let b, es = zoo dir.Path
            let ex = UpcycleExpert(es[0], [ "ab"; "cd" ], [ "ef" ])
            let spec = UpcycleSpec(b, ResizeArray [ ex; UpcycleExpert(es[1], [ "zz" ], []) ], ResizeArray(), GateMode.Hidden, 1)
            use gates = UpcycleJob.ComputeGates(UpcyclePlan.Make spec)
            let emb = (tensorsOf b)["model.embed_tokens.weight"]
            let row (c: char) = emb[int64 c]
            // Last tokens: 'b', 'd' (positives), 'f' (negative).
            let expected = normalise ((row 'b' + row 'd') / 2.0 - row 'f')
            close gates[0L, 0L] expected 1e-6 "layer 0, expert 0"
            close gates[0L, 1L] (normalise (row 'z')) 1e-6 "layer 0, expert 1"
            Expect.floatClose Accuracy.high (gates[1L, 0L].norm().item<float32> () |> float) 1.0 "unit rows in every layer"
        }

        test "hidden_avg takes each prompt's mean over its tokens (BOS included) at layer 0" {
            use dir = new TempDir()
            let b, es = zoo dir.Path
            let spec = UpcycleSpec(b, ResizeArray [ UpcycleExpert(es[0], [ "ab" ], []); UpcycleExpert(es[1], [ "q" ], []) ], ResizeArray(), GateMode.HiddenAverage, 1)
            use gates = UpcycleJob.ComputeGates(UpcyclePlan.Make spec)
            let emb = (tensorsOf b)["model.embed_tokens.weight"]
            let expected = normalise ((emb[int64 ByteTokenizer.Bos] + emb[int64 'a'] + emb[int64 'b']) / 3.0)
            close gates[0L, 0L] expected 1e-6 "mean of BOS, a, b"
        }

        test "cheap_embed: normalised sum of token embeddings, negatives' normalised sum subtracted, the same in every layer" {
            use dir = new TempDir()
            let b, es = zoo dir.Path
            let spec =
                UpcycleSpec(b, ResizeArray [ UpcycleExpert(es[0], [ "ab"; "c" ], [ "d" ]); UpcycleExpert(es[1], [ "e" ], []) ], ResizeArray(), GateMode.CheapEmbed, 1)
            use gates = UpcycleJob.ComputeGates(UpcyclePlan.Make spec)
            let emb = (tensorsOf b)["model.embed_tokens.weight"]
            let r (i: int) = emb[int64 i]
            let bos = ByteTokenizer.Bos
            let pos = normalise (r bos + r (int 'a') + r (int 'b') + r bos + r (int 'c'))
            let neg = normalise (r bos + r (int 'd'))
            let expected = normalise (pos - neg)
            close gates[0L, 0L] expected 1e-6 "layer 0"
            close gates[1L, 0L] expected 1e-6 "layer 1 equals layer 0"
        }

        test "random gates are seeded N(0, 1); uniform_random lies within ±1/√hidden" {
            let a = GateVectors.Random(2, 64, 16, 7L, false)
            let b = GateVectors.Random(2, 64, 16, 7L, false)
            let c = GateVectors.Random(2, 64, 16, 8L, false)
            close a b 0.0 "same seed, same rows"
            Expect.isGreaterThan ((a - c).abs().max().item<float32> ()) 0.1f "another seed, other rows"
            let std = a.std().item<float32> ()
            Expect.isTrue (std > 0.85f && std < 1.15f) $"std {std} near 1 (2048 draws)"
            let u = GateVectors.Random(2, 64, 16, 7L, true)
            Expect.isLessThanOrEqual (u.abs().max().item<float32> ()) 0.25f "|u| ≤ 1/√16"
            Expect.isGreaterThan (u.abs().max().item<float32> ()) 0.2f "fills the range"
        }

        test "a Mixtral folder: HF config keys, names, shapes, expert weights from their models, router rows, tokenizer" {
            use dir = new TempDir()
            let b, es = zoo dir.Path
            let yaml =
                $"base_model: {b}\ngate_mode: hidden\nexperts_per_token: 2\ndtype: bfloat16\nexperts:\n{threeExperts es}\n"
            let path = writeYaml dir.Path yaml
            let out = Path.Combine(dir.Path, "out")
            let code, stdout, err = mergedsl [ "moe"; path; out ]
            Expect.equal code 0 $"runs ({err})"
            Expect.stringContains stdout "MixtralForCausalLM" "summary names the architecture"
            let cfg = configOf out
            Expect.equal (archOf cfg) "MixtralForCausalLM" "architectures"
            Expect.equal (cfg["model_type"].GetValue<string>()) "mixtral" "model_type"
            Expect.equal (cfg["num_local_experts"].GetValue<int>()) 3 "num_local_experts"
            Expect.equal (cfg["num_experts_per_tok"].GetValue<int>()) 2 "num_experts_per_tok"
            Expect.equal (cfg["intermediate_size"].GetValue<int>()) 24 "intermediate_size"
            Expect.equal (cfg["torch_dtype"].GetValue<string>()) "bfloat16" "torch_dtype"
            Expect.isTrue (File.Exists(Path.Combine(out, "tokenizer.json"))) "tokenizer copied"
            Expect.isTrue (File.Exists(Path.Combine(out, "mergekit_moe_config.yml"))) "configuration kept"
            use ck = Checkpoint.Open out
            let info n = (match ck.TryGetInfo n with | true, i -> i | _ -> failwith $"missing {n}")
            Expect.sequenceEqual (info "model.layers.1.block_sparse_moe.gate.weight").Shape [| 3L; 16L |] "router [E, hidden]"
            Expect.equal (info "model.layers.1.block_sparse_moe.gate.weight").DType DType.BF16 "dtype"
            Expect.isFalse (ck.Tensors |> Seq.exists (fun t -> t.Name.Contains ".mlp.")) "no dense MLP left"
            let e2 = tensorsOf es[2]
            let bt = tensorsOf b
            let o = tensorsOf out
            for src, dst in [ "gate_proj", "w1"; "down_proj", "w2"; "up_proj", "w3" ] do
                close o[$"model.layers.1.block_sparse_moe.experts.2.{dst}.weight"] (e2[$"model.layers.1.mlp.{src}.weight"].to_type(torch.ScalarType.BFloat16).to_type(torch.ScalarType.Float32)) 0.0 $"expert 2 {dst}"
            close o["model.layers.0.self_attn.q_proj.weight"] (bt["model.layers.0.self_attn.q_proj.weight"].to_type(torch.ScalarType.BFloat16).to_type(torch.ScalarType.Float32)) 0.0 "attention from the base"
            Expect.equal (ck.Tensors.Count) (bt.Count - 6 + 2 * (1 + 3 * 3)) "base minus 2×3 MLP weights, plus per layer a router and 3×3 expert weights"
        }

        test "one shared expert with prompts gives Qwen2-MoE: shared expert, its gate row, zero q/k/v biases for a Llama base" {
            use dir = new TempDir()
            let b, es = zoo dir.Path
            let yaml =
                $"base_model: {b}\ngate_mode: hidden\nexperts_per_token: 1\nexperts:\n{threeExperts es}\nshared_experts:\n  - source_model: {b}\n    positive_prompts: [\"shared text\"]\n    residual_scale: 0.5\n"
            let path = writeYaml dir.Path yaml
            let out = Path.Combine(dir.Path, "out")
            let code, _, err = mergedsl [ "moe"; path; "--out"; out ]
            Expect.equal code 0 $"runs ({err})"
            let cfg = configOf out
            Expect.equal (archOf cfg) "Qwen2MoeForCausalLM" "architectures"
            for key, v in [ "num_experts", 3; "num_experts_per_tok", 1; "moe_intermediate_size", 24; "shared_expert_intermediate_size", 24; "decoder_sparse_step", 1 ] do
                Expect.equal (cfg[key].GetValue<int>()) v key
            Expect.isTrue (cfg["norm_topk_prob"].GetValue<bool>()) "norm_topk_prob"
            Expect.equal (cfg["mlp_only_layers"].AsArray().Count) 0 "mlp_only_layers"
            let o = tensorsOf out
            let bt = tensorsOf b
            close o["model.layers.0.mlp.shared_expert.down_proj.weight"] (bt["model.layers.0.mlp.down_proj.weight"] * 0.5) 1e-7 "residual_scale on the shared down_proj"
            close o["model.layers.0.mlp.shared_expert.up_proj.weight"] bt["model.layers.0.mlp.up_proj.weight"] 0.0 "shared up_proj unscaled"
            Expect.sequenceEqual o["model.layers.1.mlp.shared_expert_gate.weight"].shape [| 1L; 16L |] "gate [1, hidden]"
            let expected = normalise (referenceLayerInput bt (promptIds "shared text") 1)
            close (o["model.layers.1.mlp.shared_expert_gate.weight"][0L]) expected 1e-5 "shared gate row from its prompts"
            close o["model.layers.0.self_attn.k_proj.bias"] (torch.zeros(8L)) 0.0 "zero k bias [kv heads × head_dim]"
            Expect.sequenceEqual o["model.layers.0.mlp.experts.2.gate_proj.weight"].shape [| 24L; 16L |] "expert names"
        }

        test "a shared expert without prompts gives DeepSeek-MoE (ungated shared_experts), as mergekit's order chooses" {
            use dir = new TempDir()
            let b, es = zoo dir.Path
            let yaml = $"base_model: {b}\nexperts_per_token: 2\nexperts:\n{threeExperts es}\nshared_experts:\n  - source_model: {b}\n"
            let out = Path.Combine(dir.Path, "out")
            let code, _, err = mergedsl [ "moe"; writeYaml dir.Path yaml; "--out"; out ]
            Expect.equal code 0 $"runs ({err})"
            let cfg = configOf out
            Expect.equal (archOf cfg) "DeepseekForCausalLM" "architectures"
            Expect.equal (cfg["n_routed_experts"].GetValue<int>()) 3 "n_routed_experts"
            Expect.equal (cfg["n_shared_experts"].GetValue<int>()) 1 "n_shared_experts"
            Expect.equal (cfg["first_k_dense_replace"].GetValue<int>()) 0 "first_k_dense_replace"
            use ck = Checkpoint.Open out
            Expect.isTrue (fst (ck.TryGetInfo "model.layers.1.mlp.shared_experts.gate_proj.weight")) "shared_experts names"
            Expect.isTrue (fst (ck.TryGetInfo "model.layers.1.mlp.gate.weight")) "router name"
        }

        test "random gates and noise are reproducible; noise_scale perturbs only that expert" {
            use dir = new TempDir()
            let b, es = zoo dir.Path
            let run name seed =
                let spec =
                    { Upcycle.defaults with
                        Base = b
                        Gate = RandomGates
                        Seed = seed
                        Experts = [ { expert es[0] [] with NoiseScale = Some 0.01 }; expert es[1] [] ] }
                let out = Path.Combine(dir.Path, name)
                Upcycle.upscaleToMoE spec out false |> ignore
                tensorsOf out
            let a, a2, c = run "a" 5L, run "a2" 5L, run "c" 6L
            close a["model.layers.0.block_sparse_moe.gate.weight"] a2["model.layers.0.block_sparse_moe.gate.weight"] 0.0 "same seed"
            close a["model.layers.0.block_sparse_moe.experts.0.w1.weight"] a2["model.layers.0.block_sparse_moe.experts.0.w1.weight"] 0.0 "same noise"
            Expect.isGreaterThan ((a["model.layers.0.block_sparse_moe.gate.weight"] - c["model.layers.0.block_sparse_moe.gate.weight"]).abs().max().item<float32> ()) 0.1f "another seed"
            let e0 = tensorsOf es[0]
            let diff = (a["model.layers.0.block_sparse_moe.experts.0.w1.weight"] - e0["model.layers.0.mlp.gate_proj.weight"]).std().item<float32> ()
            Expect.isTrue (diff > 0.007f && diff < 0.013f) $"noise std {diff} ≈ 0.01"
            let e1 = tensorsOf es[1]
            close a["model.layers.0.block_sparse_moe.experts.1.w1.weight"] e1["model.layers.0.mlp.gate_proj.weight"] 0.0 "no noise on expert 1"
        }

        test "the builder validates before any tensor is read; mergedsl import prints the sparseMoe recipe" {
            use dir = new TempDir()
            let b, es = zoo dir.Path
            let ok = sparseMoe { base_model b; gate_mode CheapEmbed; experts_per_token 1; expert es[0] [ "a" ]; expert es[1] [ "b" ] }
            Expect.equal ok.Experts.Length 2 "built"
            Expect.throwsT<ArgumentException> (fun () -> sparseMoe { base_model b; experts_per_token 3; expert es[0] [ "a" ]; expert es[1] [ "b" ] } |> ignore) "k > experts"
            let path = writeYaml dir.Path $"base_model: {b}\ngate_mode: cheap_embed\nexperts:\n{threeExperts es}\n"
            let code, text, err = mergedsl [ "import"; path ]
            Expect.equal code 0 $"import runs ({err})"
            Expect.stringContains text "sparseMoe {" "builder"
            Expect.stringContains text "gate_mode CheapEmbed" "gate mode"
        }

        testList "our runtime loads and runs the upcycled folders" [
            let logits (m: DecoderModel) =
                use _ng = torch.no_grad ()
                m.Forward(torch.tensor([| 256L; 104L; 105L; 32L; 116L; 104L; 101L; 114L; 101L |]).reshape(1L, 9L))
            /// Three folders holding the same weights (seed 1 = the base's).
            let sameZoo (dir: string) =
                writeModel dir "base" byteLlama 1L, [ for i in 0 .. 2 -> writeModel dir $"copy{i}" byteLlama 1L ]
            let identical (b: string) (es: string list) =
                { Upcycle.defaults with
                    Base = b
                    Gate = Hidden
                    ExpertsPerToken = 2
                    Experts = es |> List.mapi (fun i e -> Upcycle.expert e [ $"topic {i}" ]) }
            test "Mixtral from identical experts gives the base's logits under top-1, top-2, top-3 and top-p" {
                use dir = new TempDir()
                let b, es = sameZoo dir.Path
                let out = Path.Combine(dir.Path, "out")
                Upcycle.upscaleToMoE (identical b es) out false |> ignore
                use baseModel = DecoderModelFolder.Load b
                use moe = DecoderModelFolder.Load out
                Expect.equal (MergeDsl.Core.Moe.Sparse.SparseMoe.Blocks moe).Count 2 "a sparse block per layer"
                let want = logits baseModel
                for policy in [ "top-k:1"; "top-k:2"; "top-k:3"; "top-p:0.5"; "top-p:0.9,max:2" ] do
                    MergeDsl.Core.Moe.Sparse.SparseMoe.SetRouting(moe, MergeDsl.Core.Moe.Sparse.RoutingPolicy.Parse policy)
                    close (logits moe) want 1e-4 policy
            }
            test "Qwen2-MoE and DeepSeek-MoE load; with the shared expert's residual_scale 0 they give the base's logits" {
                use dir = new TempDir()
                let b, es = sameZoo dir.Path
                use baseModel = DecoderModelFolder.Load b
                let want = logits baseModel
                for name, shared in [ "qwen", { Upcycle.expert b [ "shared" ] with ResidualScale = Some 0.0 }
                                      "deepseek", { Upcycle.expert b [] with ResidualScale = Some 0.0 } ] do
                    let out = Path.Combine(dir.Path, name)
                    let s = Upcycle.upscaleToMoE { identical b es with Shared = [ shared ] } out false
                    use moe = DecoderModelFolder.Load out
                    Expect.isNotNull moe.Config.Moe $"{name}: a sparse config ({s.Architecture})"
                    close (logits moe) want 1e-4 name
            }
            test "a shared expert adds its sigmoid-gated output (Qwen2-MoE, residual_scale 1): logits move away from the base's" {
                use dir = new TempDir()
                let b, es = sameZoo dir.Path
                let out = Path.Combine(dir.Path, "qwen")
                Upcycle.upscaleToMoE { identical b es with Shared = [ Upcycle.expert b [ "shared" ] ] } out false |> ignore
                use baseModel = DecoderModelFolder.Load b
                use moe = DecoderModelFolder.Load out
                let d = (logits moe - logits baseModel).abs().max().item<float32> ()
                Expect.isGreaterThan d 1e-3f "the shared expert contributes"
            }
        ]

        testList "bad input: one line, exit 2, nothing written" [
            let cases : (string * (string -> string list -> string) * string) list =
                [ "unknown gate_mode", (fun b es -> $"base_model: {b}\ngate_mode: hiden\nexperts:\n{threeExperts es}\n"), "unknown gate mode 'hiden'"
                  "unknown architecture", (fun b es -> $"base_model: {b}\narchitecture: gpt\nexperts:\n{threeExperts es}\n"), "unknown output architecture 'gpt'"
                  "missing prompts for hidden", (fun b es -> $"base_model: {b}\nexperts:\n  - source_model: {es[0]}\n    positive_prompts: [\"x\"]\n  - source_model: {es[1]}\n"), "experts[1].positive_prompts"
                  "experts_per_token above the experts", (fun b es -> $"base_model: {b}\nexperts_per_token: 4\nexperts:\n{threeExperts es}\n"), "experts_per_token: 4 is more than the 3 expert(s)"
                  "experts_per_token below 1", (fun b es -> $"base_model: {b}\nexperts_per_token: 0\nexperts:\n{threeExperts es}\n"), "experts_per_token: 0 is below 1"
                  "unknown key", (fun b es -> $"base_model: {b}\nexperts_per_tokens: 2\nexperts:\n{threeExperts es}\n"), "unknown key 'experts_per_tokens'"
                  "unknown expert key", (fun b es -> $"base_model: {b}\nexperts:\n  - source_model: {es[0]}\n    positive_prompt: [\"x\"]\n"), "unknown key 'positive_prompt'"
                  "bad dtype", (fun b es -> $"base_model: {b}\ndtype: float8\nexperts:\n{threeExperts es}\n"), "unknown dtype 'float8'"
                  "Mixtral with a shared expert", (fun b es -> $"base_model: {b}\narchitecture: mixtral\nexperts:\n{threeExperts es}\nshared_experts:\n  - source_model: {b}\n"), "Mixtral has no shared experts"
                  "identical prompts", (fun b es -> $"base_model: {b}\nexperts:\n  - source_model: {es[0]}\n    positive_prompts: [\"x\"]\n  - source_model: {es[1]}\n    positive_prompts: [\"x\"]\n"), "same positive and negative prompts"
                  "missing model", (fun b es -> $"base_model: {b}\nexperts:\n  - source_model: {b}-nothing\n    positive_prompts: [\"x\"]\n"), "experts[0].source_model" ]
            for name, yaml, fragment in cases do
                test name {
                    use dir = new TempDir()
                    let b, es = zoo dir.Path
                    expectRefused dir.Path (yaml b es) fragment
                }
            test "an expert whose MLP shapes differ from the base's (named, with both shapes, from the headers)" {
                use dir = new TempDir()
                let b, es = zoo dir.Path
                let wide = writeModel dir.Path "wide" (llamaWith 2 32) 9L
                let yaml = $"base_model: {b}\nexperts:\n  - source_model: {es[0]}\n    positive_prompts: [\"a\"]\n  - source_model: {wide}\n    positive_prompts: [\"b\"]\n"
                expectRefused dir.Path yaml "tensor 'model.layers.0.mlp.gate_proj.weight' is [32, 16] but the base's"
            }
        ]
    ]

/// `mergedsl bench textmoe --quick` end to end (reuses or trains the text pool's quick zoo).
[<Tests>]
let textMoeQuick =
    testSequenced <| testList "TextMoe quick" [
        test "bench textmoe --quick: every gate mode × routing × shared row, reports, experts per token, p chosen on validation" {
            if not (MergeDsl.Bench.Data.TextDomains.All |> Seq.forall (fun d -> (MergeDsl.Bench.Data.TextDocuments.MissingPackages d).Count = 0)) then
                skiptestf "text packages not installed; run: %s" MergeDsl.Bench.Data.TextCorpus.InstallCommand
            use dir = new TempDir()
            let out = Path.Combine(dir.Path, "report")
            let code, stdout, err = mergedsl [ "bench"; "textmoe"; "--quick"; "--data"; MergeDsl.Bench.Data.DataStore.DefaultRoot(); "--out"; out ]
            Expect.equal code 0 $"runs ({err})"
            Expect.stringContains stdout "| hidden, top-k:1 |" "markdown table printed"
            for f in [ "results.json"; "results.md"; "results.png" ] do
                Expect.isGreaterThan (FileInfo(Path.Combine(out, f)).Length) 100L (f + " written")
            let json = JsonNode.Parse(File.ReadAllText(Path.Combine(out, "results.json")))
            let rows = json["rows"].AsArray() |> Seq.map (fun r -> r.AsObject()) |> List.ofSeq
            Expect.equal rows.Length (1 + 3 * 2 * 3) "pretrained + 3 gate modes × 2 (shared or not) × 3 routings"
            let byName (n: string) = rows |> List.find (fun r -> r["method"].GetValue<string> () = n)
            let ept (n: string) = (byName n).["experts_per_token"].GetValue<float> ()
            let one, two = ept "hidden, top-k:1", ept "random, top-k:2, shared"
            Expect.floatClose Accuracy.high one 1.0 "top-1 uses one expert"
            Expect.floatClose Accuracy.high two 2.0 "top-2 uses two"
            let p = ept "cheap_embed, top-p"
            Expect.isTrue (p >= 1.0 && p <= 7.0) $"top-p between 1 and 7 experts ({p})"
            let topP = byName "hidden, top-p"
            let validation = topP["validation_bits_per_byte"].AsObject() |> Seq.map (fun kv -> kv.Key, kv.Value.GetValue<float>()) |> List.ofSeq
            Expect.equal validation.Length 3 "three p tried"
            Expect.equal (topP["routing"].GetValue<string>()) (validation |> List.minBy snd |> fst) "chosen p = lowest validation bits per byte"
            let pre = byName "Pretrained (dense)"
            let moeParams = (byName "hidden, top-k:2").["parameters"].GetValue<int64> ()
            Expect.isGreaterThan moeParams (pre["parameters"].GetValue<int64> ()) "the mixture is larger"
            for r in rows do
                let b = r["average_held_in"].GetValue<float>()
                Expect.isTrue (b > 0.0 && b < 16.0) (r["method"].GetValue<string>())
        }
    ]
