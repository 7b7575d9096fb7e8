/// The decoder runtime (Llama, Mistral, Qwen2): logits against an independent plain-ops forward, KV cache,
/// causality, batched scoring, generation, config and weight errors, folders.
module MergeDsl.Tests.DecoderTests

open System
open System.IO
open System.Collections.Generic
open Expecto
open TorchSharp
open MergeDsl.Core.Models
open MergeDsl.Core.Models.Decoder
open MergeDsl.Core.Models.Decoder.Tokenizers
open MergeDsl.Tests.TestSupport

/// Tiny configurations covering the families' differences: GQA and MQA, tied and untied heads, Qwen2's q/k/v
/// biases, Llama's attention_bias/mlp_bias, a head_dim that is not hidden/heads.
let tinyConfigs : (string * DecoderConfig) list =
    [ "llama untied, GQA 4/2",
      DecoderConfig(Family = DecoderFamily.Llama, VocabSize = 40, HiddenSize = 16, IntermediateSize = 24, NumHiddenLayers = 2,
                    NumAttentionHeads = 4, NumKeyValueHeads = 2, HeadDim = 4, MaxPositionEmbeddings = 64, RopeTheta = 10000.0)
      "llama tied, MQA 4/1, attention_bias, mlp_bias, head_dim 6",
      DecoderConfig(Family = DecoderFamily.Llama, VocabSize = 40, HiddenSize = 16, IntermediateSize = 20, NumHiddenLayers = 2,
                    NumAttentionHeads = 4, NumKeyValueHeads = 1, HeadDim = 6, MaxPositionEmbeddings = 64, RopeTheta = 50.0,
                    TieWordEmbeddings = true, QkvBias = true, OutputBias = true, MlpBias = true, RmsNormEps = 1e-5)
      "mistral untied, GQA 4/2, sliding window 32",
      DecoderConfig(Family = DecoderFamily.Mistral, VocabSize = 40, HiddenSize = 16, IntermediateSize = 24, NumHiddenLayers = 2,
                    NumAttentionHeads = 4, NumKeyValueHeads = 2, HeadDim = 4, MaxPositionEmbeddings = 64, RopeTheta = 1000.0,
                    SlidingWindow = Nullable 32)
      "qwen2 tied, GQA 4/2, q/k/v biases",
      DecoderConfig(Family = DecoderFamily.Qwen2, VocabSize = 40, HiddenSize = 16, IntermediateSize = 24, NumHiddenLayers = 3,
                    NumAttentionHeads = 4, NumKeyValueHeads = 2, HeadDim = 4, MaxPositionEmbeddings = 64, RopeTheta = 1000000.0,
                    TieWordEmbeddings = true, QkvBias = true)
      "qwen2 untied, MHA 2/2",
      DecoderConfig(Family = DecoderFamily.Qwen2, VocabSize = 40, HiddenSize = 16, IntermediateSize = 24, NumHiddenLayers = 2,
                    NumAttentionHeads = 2, NumKeyValueHeads = 2, HeadDim = 8, MaxPositionEmbeddings = 64, RopeTheta = 100.0,
                    QkvBias = true) ]

/// A model whose weights are large enough (std 0.3) that attention patterns and the MLP matter to the logits.
let randomModel (cfg: DecoderConfig) (seed: int64) = DecoderModelFolder.Random(cfg, seed, 0.3)

let private ids2d (rows: int[] list) =
    let t = rows.Head.Length
    torch.tensor(rows |> Seq.concat |> Seq.map int64 |> Array.ofSeq).reshape(int64 rows.Length, int64 t)

let private maxAbs (a: torch.Tensor) (b: torch.Tensor) = (a - b).abs().max().item<float32> ()

let private tempDir () = tempDir "llm"

[<Tests>]
let tests =
    testList "decoder runtime" [
        for name, cfg in tinyConfigs do
            test $"logits match an independent plain-ops implementation ({name})" {
                use _ = torch.NewDisposeScope()
                use m = randomModel cfg 11L
                let w = m.StateTensors()
                let seqs = [ [| 1; 5; 9; 2; 33; 7; 7; 0 |]; [| 39; 0; 3; 3; 12; 25; 18; 4 |] ]
                use _ng = torch.no_grad ()
                let ours = m.Forward(ids2d seqs)
                Expect.sequenceEqual ours.shape [| 2L; 8L; 40L |] "[B, T, vocab]"
                for b, s in List.indexed seqs do
                    let theirs = DecoderReference.forward cfg w s
                    let expected = torch.tensor(Array.concat theirs |> Array.map float32).reshape(8L, 40L)
                    let scale = expected.abs().max().item<float32> ()
                    Expect.isGreaterThan scale 0.5f "logits are not trivially small"
                    let err = maxAbs (ours.select(0, int64 b)) expected
                    Expect.isLessThan err (2e-5f * max 1.0f scale) $"sequence {b}: max |runtime - reference| = {err} (scale {scale})"
            }

        test "parameter names and shapes are Hugging Face's; a tied model has no lm_head" {
            let _, untied = tinyConfigs[0]
            let _, tied = tinyConfigs[3]
            use a = new DecoderModel(untied)
            use b = new DecoderModel(tied)
            let pa = a.ParametersByName()
            Expect.sequenceEqual pa["model.layers.1.self_attn.k_proj.weight"].shape [| 8L; 16L |] "k_proj [kv*hd, hidden]"
            Expect.sequenceEqual pa["model.layers.0.mlp.gate_proj.weight"].shape [| 24L; 16L |] "gate_proj [inter, hidden]"
            Expect.sequenceEqual pa["lm_head.weight"].shape [| 40L; 16L |] "lm_head"
            Expect.isFalse (pa.ContainsKey "model.layers.0.self_attn.q_proj.bias") "llama: no bias"
            let pb = b.ParametersByName()
            Expect.isFalse (pb.ContainsKey "lm_head.weight") "tied: no lm_head"
            Expect.isTrue (pb.ContainsKey "model.layers.2.self_attn.v_proj.bias") "qwen2: v bias"
            Expect.isFalse (pb.ContainsKey "model.layers.2.self_attn.o_proj.bias") "qwen2: no o bias"
            Expect.equal (pb.Count) (1 + 3 * 12 + 1) "embed + 3 layers × (2 norms, 4 proj weights, 3 biases, 3 mlp) + norm"
        }

        for name, cfg in tinyConfigs do
            test $"KV-cache generation gives the tokens and logits of full recomputation ({name})" {
                use m = randomModel cfg 5L
                let prompt = [| 3; 17; 8 |]
                let run cache temp topk =
                    DecoderGeneration.Generate(m, prompt, GenerationOptions(MaxNewTokens = 12, UseCache = cache, KeepLogits = true,
                                                                            Temperature = temp, TopK = topk, Seed = 42L))
                for temp, topk in [ 0.0, 0; 1.0, 5 ] do
                    let a = run true temp topk
                    let b = run false temp topk
                    Expect.sequenceEqual a.Tokens b.Tokens $"tokens (temperature {temp}, top-k {topk})"
                    for s in 0 .. a.StepLogits.Count - 1 do
                        let err = Array.map2 (fun (x: float32) y -> abs (x - y)) a.StepLogits[s] b.StepLogits[s] |> Array.max
                        Expect.isLessThan err 1e-4f $"step {s} logits"
            }

        test "sampling: top-k 1 is greedy, the same seed repeats, temperature and top-k are checked" {
            let _, cfg = tinyConfigs[0]
            use m = randomModel cfg 9L
            let gen o = DecoderGeneration.Generate(m, [| 1; 2 |], o).Tokens |> List.ofSeq
            let greedy = gen (GenerationOptions(MaxNewTokens = 10))
            Expect.equal (gen (GenerationOptions(MaxNewTokens = 10, Temperature = 2.0, TopK = 1, Seed = 3L))) greedy "top-k 1"
            let s1 = gen (GenerationOptions(MaxNewTokens = 20, Temperature = 1.5, Seed = 7L))
            Expect.equal (gen (GenerationOptions(MaxNewTokens = 20, Temperature = 1.5, Seed = 7L))) s1 "same seed"
            let seeds = [ 1L .. 6L ] |> List.map (fun s -> gen (GenerationOptions(MaxNewTokens = 20, Temperature = 1.5, Seed = s)))
            Expect.isGreaterThan (seeds |> List.distinct |> List.length) 1 "different seeds sample differently"
            throwsWith<ArgumentException> (fun () -> gen (GenerationOptions(Temperature = -1.0)) |> ignore) "temperature" "negative temperature"
            throwsWith<ArgumentException> (fun () -> gen (GenerationOptions(TopK = -2)) |> ignore) "top-k" "negative top-k"
            let eos = greedy[3]
            let stopped = gen (GenerationOptions(MaxNewTokens = 10, StopAtEos = Nullable eos))
            Expect.equal (List.last stopped) eos "stops at EOS"
            Expect.isLessThanOrEqual stopped.Length 4 "stops at the first EOS"
        }

        for name, cfg in tinyConfigs do
            test $"changing token t+1 never changes the logits at t ({name})" {
                use _ = torch.NewDisposeScope()
                use m = randomModel cfg 3L
                use _ng = torch.no_grad ()
                let a = [| 4; 8; 15; 16; 23; 42 % 40; 1; 2 |]
                for t in 0 .. a.Length - 2 do
                    let b = Array.copy a
                    b[t + 1] <- (a[t + 1] + 7) % 40
                    let la = m.Forward(ids2d [ a ]).narrow(1, 0, int64 t + 1L)
                    let lb = m.Forward(ids2d [ b ]).narrow(1, 0, int64 t + 1L)
                    Expect.isLessThan (maxAbs la lb) 1e-6f $"positions ≤ {t} after changing {t + 1}"
                    let after = m.Forward(ids2d [ b ]).narrow(1, int64 t + 1L, 1L)
                    Expect.isGreaterThan (maxAbs (m.Forward(ids2d [ a ]).narrow(1, int64 t + 1L, 1L)) after) 1e-4f "the changed position itself changes"
            }

        test "batched scoring with right padding equals scoring one by one" {
            let _, cfg = tinyConfigs[3]
            use m = randomModel cfg 21L
            let rng = Random 5
            let seqs = [ for len in [ 1; 9; 3; 17; 2; 12; 5 ] -> Array.init len (fun _ -> rng.Next 40) :> IReadOnlyList<int> ] |> ResizeArray
            let batched = DecoderScoring.Score(m, seqs, 3)
            for i in 0 .. seqs.Count - 1 do
                let single = DecoderScoring.Score(m, ResizeArray [ seqs[i] ], 1)[0]
                Expect.equal batched[i].Tokens (seqs[i].Count - 1) "n - 1 predicted tokens"
                for j in 0 .. single.Tokens - 1 do
                    Expect.floatClose { absolute = 1e-5; relative = 1e-5 } batched[i].TokenLogLikelihoods[j] single.TokenLogLikelihoods[j] $"seq {i} token {j}"
            let direct =
                use _ng = torch.no_grad ()
                let s = seqs[3] |> Array.ofSeq
                let lp = m.Forward(ids2d [ s ]).log_softmax(-1L)
                lp[0L, 4L, int64 s[5]].item<float32> () |> float
            Expect.floatClose { absolute = 1e-5; relative = 1e-5 } batched[3].TokenLogLikelihoods[4] direct "entry i is log p(token i+1 | ..i)"
        }

        test "bits per byte: hand-checked numbers" {
            let s = SequenceScore([| Math.Log 0.5; Math.Log 0.25 |])
            Expect.floatClose Accuracy.veryHigh (s.BitsPerByte 2L) 1.5 "(1 + 2) bits over 2 bytes"
            Expect.floatClose Accuracy.veryHigh s.MeanLogLikelihood (Math.Log(0.5) * 1.5) "mean ln p"
            // A model with all-zero weights gives uniform logits: every byte costs log2(vocab) bits.
            let cfg = DecoderConfig(Family = DecoderFamily.Llama, VocabSize = ByteTokenizer.VocabSize, HiddenSize = 8, IntermediateSize = 8,
                                    NumHiddenLayers = 1, NumAttentionHeads = 2, NumKeyValueHeads = 2, HeadDim = 4, MaxPositionEmbeddings = 64)
            use m = new DecoderModel(cfg)
            do
                use _ng = torch.no_grad ()
                for p in m.parameters () do p.zero_() |> ignore
            let tok = ByteTokenizer()
            let text = "héllo"
            let ids = Array.append [| ByteTokenizer.Bos |] (Array.ofSeq (tok.Encode text))
            let score = DecoderScoring.Score(m, ResizeArray [ ids :> IReadOnlyList<int> ])[0]
            Expect.equal score.Tokens 6 "h, é (2 bytes), l, l, o"
            Expect.floatClose Accuracy.high (score.BitsPerByte 6L) (Math.Log(258.0, 2.0)) "log2 258 = 8.0112 bits per byte"
        }

        test "sequences longer than max_position_embeddings or the sliding window fail with one line" {
            let _, cfg = tinyConfigs[2]
            use m = new DecoderModel(cfg, "x/config.json")
            throwsWith<ArgumentException> (fun () -> m.Forward(torch.zeros([| 1L; 33L |], torch.ScalarType.Int64)) |> ignore)
                "sliding_window 32" "mistral window"
            let _, llama = tinyConfigs[0]
            use l = new DecoderModel(llama, "y/config.json")
            throwsWith<ArgumentException> (fun () -> DecoderScoring.Score(l, ResizeArray [ Array.zeroCreate 65 :> IReadOnlyList<int> ]) |> ignore)
                "y/config.json: a sequence of 65 tokens is longer than max_position_embeddings 64" "too long"
            throwsWith<ArgumentException> (fun () -> DecoderGeneration.Generate(l, [| 1; 2 |], GenerationOptions(MaxNewTokens = 63)) |> ignore)
                "max_position_embeddings 64" "prompt + new tokens too long"
            throwsWith<ArgumentException> (fun () -> l.Forward(torch.tensor([| 0L; 40L |]).reshape(1L, 2L)) |> ignore)
                "token id 40 is outside the vocabulary (vocab_size 40)" "bad id"
        }

        test "config.json: the three families parse, unsupported ones fail naming the file" {
            let parse (json: string) = DecoderConfig.FromJson(json, "m/config.json")
            let qwen = parse """{"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "vocab_size": 100, "hidden_size": 32, "intermediate_size": 64,
                                 "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "rope_theta": 1000000.0,
                                 "tie_word_embeddings": true, "use_sliding_window": false, "sliding_window": 4096, "rope_scaling": null,
                                 "eos_token_id": [7, 8], "bos_token_id": 6}"""
            Expect.equal (qwen.Family, qwen.HeadDim, qwen.QkvBias, qwen.OutputBias, qwen.SlidingWindow, qwen.EosTokenId)
                         (DecoderFamily.Qwen2, 8, true, false, Nullable(), Nullable 7) "qwen2 fields"
            let mistral = parse """{"model_type": "mistral", "vocab_size": 100, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                                    "num_attention_heads": 8, "sliding_window": 4096}"""
            Expect.equal (mistral.NumKeyValueHeads, mistral.SlidingWindow, mistral.MaxPositionEmbeddings) (8, Nullable 4096, 131072) "mistral defaults"
            let llama = parse """{"architectures": ["LlamaForCausalLM"], "vocab_size": 100, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                                  "num_attention_heads": 4, "attention_bias": true, "rope_scaling": {"rope_type": "default"}}"""
            Expect.equal (llama.NumKeyValueHeads, llama.QkvBias, llama.OutputBias, llama.MaxPositionEmbeddings) (4, true, true, 2048) "llama defaults"
            Expect.equal (DecoderConfig.FromJson(llama.ToJson())) llama "ToJson round trip"
            Expect.equal (DecoderConfig.FromJson(qwen.ToJson())) qwen "ToJson round trip (qwen2)"
            let bad (json: string) fragment =
                throwsWith<FormatException> (fun () -> parse json |> ignore) ("m/config.json: " + fragment) fragment
            let body = "\"vocab_size\": 100, \"hidden_size\": 32, \"intermediate_size\": 64, \"num_hidden_layers\": 2, \"num_attention_heads\": 4"
            bad ("{\"architectures\": [\"GPT2LMHeadModel\"], " + body + "}") "architectures [GPT2LMHeadModel] is not a supported decoder"
            bad ("{\"model_type\": \"dbrx\", " + body + "}") "model_type 'dbrx' is not supported"
            bad ("{\"architectures\": [\"LlamaForCausalLM\"], \"model_type\": \"qwen2\", " + body + "}") "architectures says LlamaForCausalLM but model_type is 'qwen2'"
            bad ("{\"model_type\": \"llama\", \"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 8.0}, " + body + "}") "rope_scaling type 'yarn' is not supported"
            bad ("{\"model_type\": \"llama\", \"hidden_act\": \"gelu\", " + body + "}") "hidden_act 'gelu' is not supported"
            bad ("{\"model_type\": \"llama\", \"num_key_value_heads\": 3, " + body + "}") "num_attention_heads 4 is not a multiple of num_key_value_heads 3"
            bad """{"model_type": "llama", "hidden_size": 32}""" "num_attention_heads is missing"
            bad ("{\"model_type\": \"llama\", " + body + ", \"vocab_size\": 7}") "not valid JSON"
            bad ("{\"model_type\": \"llama\", \"rms_norm_eps\": \"small\", " + body + "}") "rms_norm_eps must be a number"
            bad ("{" + body + "}") "neither architectures nor model_type is given"
            bad "[1]" "expected a JSON object"
        }

        test "a folder round-trips through Save and Load; missing and mis-shaped tensors are named" {
            use _ = torch.NewDisposeScope()
            let dir = tempDir ()
            try
                for i, (_, cfg) in List.indexed tinyConfigs do
                    use m = randomModel cfg (int64 i)
                    let folder = Path.Combine(dir, $"m{i}")
                    DecoderModelFolder.Save(folder, m, DecoderModelFolder.ByteTokenizerFiles())
                    use back = DecoderModelFolder.Load folder
                    Expect.equal back.Config cfg "config"
                    use ck = MergeDsl.Core.Checkpoints.Checkpoint.Open folder
                    Expect.equal (ck.TryGetInfo("lm_head.weight") |> fst) (not cfg.TieWordEmbeddings) "lm_head.weight only when untied"
                    use _ng = torch.no_grad ()
                    let ids = ids2d [ [| 1; 2; 3; 4 |] ]
                    Expect.equal (maxAbs (m.Forward ids) (back.Forward ids)) 0.0f "same logits"
                // Untied config over a tied checkpoint: lm_head.weight is missing.
                let tiedFolder = Path.Combine(dir, "m3")
                let cfgText = File.ReadAllText(Path.Combine(tiedFolder, "config.json")).Replace("\"tie_word_embeddings\": true", "\"tie_word_embeddings\": false")
                File.WriteAllText(Path.Combine(tiedFolder, "config.json"), cfgText)
                throwsWith<ModelWeightsException> (fun () -> DecoderModelFolder.Load tiedFolder |> ignore) "missing 1 parameter(s): lm_head.weight" "untied needs lm_head"
                // A mis-shaped tensor.
                let _, cfg0 = tinyConfigs[0]
                use m0 = randomModel cfg0 1L
                let w = m0.StateTensors()
                w["model.layers.1.self_attn.k_proj.weight"] <- torch.zeros([| 16L; 16L |])
                let shaped = Path.Combine(dir, "shaped")
                MergeDsl.Core.Checkpoints.CheckpointWriter.WriteAll(shaped, w, MergeDsl.Core.Checkpoints.CheckpointWriterOptions(ExtraFiles = readOnlyDict [ "config.json", cfg0.ToJson() ]))
                throwsWith<ModelWeightsException> (fun () -> DecoderModelFolder.Load shaped |> ignore)
                    "model.layers.1.self_attn.k_proj.weight [16,16] (model expects [8,16])" "mis-shaped"
            finally
                Directory.Delete(dir, true)
        }

        test "the runtime loads and runs half-precision (BF16) checkpoints in float32" {
            use _ = torch.NewDisposeScope()
            let _, cfg = tinyConfigs[1]
            use m = randomModel cfg 2L
            let dir = tempDir ()
            try
                let w = m.StateTensors()
                let bf = Dictionary<string, torch.Tensor>()
                for KeyValue(k, v) in w do bf[k] <- v.to_type(torch.ScalarType.BFloat16)
                MergeDsl.Core.Checkpoints.CheckpointWriter.WriteAll(dir + "/bf", bf, MergeDsl.Core.Checkpoints.CheckpointWriterOptions(ExtraFiles = readOnlyDict [ "config.json", cfg.ToJson() ]))
                use back = DecoderModelFolder.Load(dir + "/bf")
                use _ng = torch.no_grad ()
                let expected = Dictionary<string, torch.Tensor>()
                for KeyValue(k, v) in bf do expected[k] <- v.to_type(torch.ScalarType.Float32)
                let ids = [| 5; 1; 30; 2 |]
                let theirs = DecoderReference.forward cfg expected ids
                let err = maxAbs (back.Forward(ids2d [ ids ]).select(0, 0L)) (torch.tensor(Array.concat theirs |> Array.map float32).reshape(4L, 40L))
                Expect.isLessThan err 1e-4f "bf16 weights, f32 compute"
            finally
                Directory.Delete(dir, true)
        }
    ]
