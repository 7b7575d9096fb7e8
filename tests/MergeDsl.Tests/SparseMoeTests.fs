/// Sparse MoE blocks (Mixtral, Qwen2-MoE, DeepSeek-MoE): an independent per-token plain-ops reference (explicit
/// softmax, top-k, top-p over double arrays, written here from the transformers / DeepSeek modelling code's
/// definitions) against the runtime's grouped dispatch; hand-checked routing numbers; HF names and configs;
/// KV cache and causality.
module MergeDsl.Tests.SparseMoeTests

open System
open System.IO
open System.Collections.Generic
open System.Text.Json
open Expecto
open TorchSharp
open MergeDsl.Core.Models.Decoder
open MergeDsl.Core.Moe.Sparse
open MergeDsl.Tests.TestSupport

// ---- The reference (plain doubles, one token at a time) ----

let private vecOf (t: torch.Tensor) = t.to_type(torch.ScalarType.Float64).contiguous().data<double>().ToArray()
let private silu z = z / (1.0 + Math.Exp(-z))
let private sigmoid z = 1.0 / (1.0 + Math.Exp(-z))

/// The experts a token goes to, by descending probability (ties: lower index first).
let refSelect (probs: double[]) (policy: RoutingPolicy) : int[] =
    let order =
        probs |> Array.mapi (fun i p -> i, p)
        |> Array.sortWith (fun (i, p) (j, q) -> if p > q then -1 elif p < q then 1 else compare i j)
    let n =
        match policy with
        | :? TopK as k -> k.K
        | :? TopP as tp ->
            // The smallest prefix whose sum reaches p: keep adding while the sum so far is below p.
            let mutable acc = 0.0
            let mutable n = 0
            while n < order.Length && acc < tp.P do
                acc <- acc + snd order[n]
                n <- n + 1
            max 1 (min n tp.MaxExperts)
        | p -> failwith $"unknown policy {p}"
    order |> Array.take n |> Array.map fst

/// One token through a sparse block whose weights are under <c>prefix</c> (e.g. <c>model.layers.0.mlp.</c>).
/// Returns the output and how many experts were used.
let refBlock (moe: SparseMoeConfig) (w: IReadOnlyDictionary<string, torch.Tensor>) (prefix: string) (policy: RoutingPolicy) (x: double[]) =
    let lin name = DecoderReference.linearOf w[prefix + name + ".weight"]
    let swiglu (g: string) (u: string) (d: string) (x: double[]) =
        Array.map2 (fun a b -> silu a * b) (lin g x) (lin u x) |> lin d
    let logits = lin "gate" x
    let m = Array.max logits
    let e = logits |> Array.map (fun l -> Math.Exp(l - m))
    let z = Array.sum e
    let probs = e |> Array.map (fun v -> v / z)
    let chosen = refSelect probs policy
    let raw = chosen |> Array.map (fun i -> probs[i])
    let renorm =
        match moe.Style with
        | SparseMoeStyle.Mixtral -> true
        | SparseMoeStyle.DeepseekMoe -> moe.NormTopKProb && not (match policy with :? TopK as k -> k.K = 1 | _ -> false)
        | _ -> moe.NormTopKProb
    let s = Array.sum raw
    let weights = raw |> Array.map (fun r -> (if renorm then r / s else r) * moe.RoutedScalingFactor)
    let out = Array.zeroCreate x.Length
    for j, i in Array.indexed chosen do
        let y =
            if moe.Style = SparseMoeStyle.Mixtral then swiglu $"experts.{i}.w1" $"experts.{i}.w3" $"experts.{i}.w2" x
            else swiglu $"experts.{i}.gate_proj" $"experts.{i}.up_proj" $"experts.{i}.down_proj" x
        for k in 0 .. x.Length - 1 do out[k] <- out[k] + weights[j] * y[k]
    match moe.Style with
    | SparseMoeStyle.Qwen2Moe when moe.SharedExpertIntermediateSize > 0 ->
        let y = swiglu "shared_expert.gate_proj" "shared_expert.up_proj" "shared_expert.down_proj" x
        let g = sigmoid (Array.head (lin "shared_expert_gate" x))
        for k in 0 .. x.Length - 1 do out[k] <- out[k] + g * y[k]
    | SparseMoeStyle.DeepseekMoe when moe.SharedExpertIntermediateSize > 0 ->
        let y = swiglu "shared_experts.gate_proj" "shared_experts.up_proj" "shared_experts.down_proj" x
        for k in 0 .. x.Length - 1 do out[k] <- out[k] + y[k]
    | _ -> ()
    out, chosen.Length

/// The whole model's logits with the reference block in sparse layers and the dense SwiGLU elsewhere.
let refLogits (cfg: DecoderConfig) (policy: RoutingPolicy) (w: IReadOnlyDictionary<string, torch.Tensor>) (ids: int[]) =
    let ffn (p: string) (x: double[]) =
        if w.ContainsKey(p + "block_sparse_moe.gate.weight") then fst (refBlock cfg.Moe w (p + "block_sparse_moe.") policy x)
        elif w.ContainsKey(p + "mlp.gate.weight") then fst (refBlock cfg.Moe w (p + "mlp.") policy x)
        else
            let lin n = DecoderReference.linearOf w[p + $"mlp.{n}.weight"]
            Array.map2 (fun a b -> silu a * b) (lin "gate_proj" x) (lin "up_proj" x) |> lin "down_proj"
    DecoderReference.forwardWith ffn cfg w ids

// ---- Configurations ----

let private config (family: DecoderFamily) (layers: int) (moe: SparseMoeConfig) =
    // Mixtral's intermediate_size is its experts' width; the others' is the width of their dense layers.
    let width = if family = DecoderFamily.Mixtral then moe.ExpertIntermediateSize else 20
    DecoderConfig(Family = family, VocabSize = 40, HiddenSize = 16, IntermediateSize = width, NumHiddenLayers = layers,
                  NumAttentionHeads = 4, NumKeyValueHeads = 2, HeadDim = 4, MaxPositionEmbeddings = 64, RopeTheta = 1000.0,
                  QkvBias = (family = DecoderFamily.Qwen2Moe), Moe = moe)

/// Mixtral: 6 experts of width 12, top-2, untied.
let mixtralConfig =
    config DecoderFamily.Mixtral 2 (SparseMoeConfig(Style = SparseMoeStyle.Mixtral, NumExperts = 6, ExpertsPerToken = 2, ExpertIntermediateSize = 12))

/// Qwen2-MoE: 6 experts of width 8, top-3 without renormalisation, a gated shared expert of width 14; layer 0 dense
/// (mlp_only_layers), layer 2 dense (decoder_sparse_step 2 keeps layers 1 and 3 sparse).
let qwenConfig =
    config DecoderFamily.Qwen2Moe 4
        (SparseMoeConfig(Style = SparseMoeStyle.Qwen2Moe, NumExperts = 6, ExpertsPerToken = 3, ExpertIntermediateSize = 8,
                         NormTopKProb = false, SharedExpertIntermediateSize = 14, NumSharedExperts = 1, SharedExpertGate = true,
                         DecoderSparseStep = 2, MlpOnlyLayers = [| 0 |]))

/// DeepSeek-MoE: 8 fine-grained experts of width 6, top-3 renormalised, 2 shared experts (width 12), the first layer
/// dense, routed scale 1.5.
let deepseekConfig =
    config DecoderFamily.DeepseekMoe 3
        (SparseMoeConfig(Style = SparseMoeStyle.DeepseekMoe, NumExperts = 8, ExpertsPerToken = 3, ExpertIntermediateSize = 6,
                         NormTopKProb = true, SharedExpertIntermediateSize = 12, NumSharedExperts = 2, FirstKDenseReplace = 1,
                         RoutedScalingFactor = 1.5))

let styles = [ "mixtral", mixtralConfig; "qwen2-moe", qwenConfig; "deepseek-moe", deepseekConfig ]

let private policies : RoutingPolicy list =
    [ TopK 1; TopK 2; TopK 3; TopP(0.5); TopP(0.8, 2); TopP(0.95); TopP(1.0) ]

let private randomModel (cfg: DecoderConfig) (seed: int64) = DecoderModelFolder.Random(cfg, seed, 0.3)

let private maxAbs (a: torch.Tensor) (b: torch.Tensor) = (a - b).abs().max().item<float32> ()

let private ids2d (rows: int[] list) =
    torch.tensor(rows |> Seq.concat |> Seq.map int64 |> Array.ofSeq).reshape(int64 rows.Length, int64 rows.Head.Length)

let private tempDir () = tempDir "smoe"

/// Selected experts of each row of a probability table, and the combination weights.
let private route (rows: float32[][]) (policy: RoutingPolicy) (renorm: bool) =
    use probs = torch.tensor(Array.concat rows).reshape(int64 rows.Length, int64 rows[0].Length)
    use sel = SparseRouting.Select(probs, policy)
    use w = SparseRouting.Weights(probs, sel, renorm, 1.0)
    let e = rows[0].Length
    let s = sel.data<bool>().ToArray()
    let wv = w.data<float32>().ToArray()
    [ for r in 0 .. rows.Length - 1 -> [ for j in 0 .. e - 1 do if s[r * e + j] then j ] ], wv

/// The expected HF names of one sparse layer (Mixtral block_sparse_moe / Qwen2-MoE / DeepSeek mlp).
let private expectedMoeNames (cfg: DecoderConfig) (layer: int) =
    let m = cfg.Moe
    let p = $"model.layers.{layer}."
    match m.Style with
    | SparseMoeStyle.Mixtral ->
        [ yield p + "block_sparse_moe.gate.weight"
          for i in 0 .. m.NumExperts - 1 do
              for w in [ "w1"; "w2"; "w3" ] -> p + $"block_sparse_moe.experts.{i}.{w}.weight" ]
    | style ->
        [ yield p + "mlp.gate.weight"
          for i in 0 .. m.NumExperts - 1 do
              for w in [ "gate_proj"; "up_proj"; "down_proj" ] -> p + $"mlp.experts.{i}.{w}.weight"
          if style = SparseMoeStyle.Qwen2Moe then
              for w in [ "gate_proj"; "up_proj"; "down_proj" ] -> p + $"mlp.shared_expert.{w}.weight"
              yield p + "mlp.shared_expert_gate.weight"
          else
              for w in [ "gate_proj"; "up_proj"; "down_proj" ] -> p + $"mlp.shared_experts.{w}.weight" ]

let private expectedNames (cfg: DecoderConfig) =
    set [ yield "model.embed_tokens.weight"
          yield "model.norm.weight"
          if not cfg.TieWordEmbeddings then yield "lm_head.weight"
          for l in 0 .. cfg.NumHiddenLayers - 1 do
              let p = $"model.layers.{l}."
              yield p + "input_layernorm.weight"
              yield p + "post_attention_layernorm.weight"
              for n in [ "q_proj"; "k_proj"; "v_proj"; "o_proj" ] do
                  yield p + $"self_attn.{n}.weight"
              if cfg.QkvBias then
                  for n in [ "q_proj"; "k_proj"; "v_proj" ] do
                      yield p + $"self_attn.{n}.bias"
              if cfg.Moe.IsSparseLayer l then yield! expectedMoeNames cfg l
              else
                  for n in [ "gate_proj"; "up_proj"; "down_proj" ] do
                      yield p + $"mlp.{n}.weight" ]

let private byteMixtral =
    DecoderConfig(Family = DecoderFamily.Mixtral, VocabSize = 258, HiddenSize = 16, IntermediateSize = 12, NumHiddenLayers = 2,
                  NumAttentionHeads = 4, NumKeyValueHeads = 2, HeadDim = 4, MaxPositionEmbeddings = 64,
                  Moe = SparseMoeConfig(Style = SparseMoeStyle.Mixtral, NumExperts = 4, ExpertsPerToken = 2, ExpertIntermediateSize = 12))

let private expectOneLineFailure (code, out: string, err: string) (expectedCode: int) (fragment: string) =
    Expect.equal code expectedCode $"exit code ({err})"
    Expect.stringContains err fragment "names the fault"
    Expect.equal (err.Trim().Split('\n').Length) 1 $"one line: {err}"
    ignore out

[<Tests>]
let tests =
    testList "sparse-moe" [
        testList "block = per-token reference" [
            for name, cfg in styles do
                test $"{name}: every policy, every token" {
                    use m = randomModel cfg 11L
                    let w = m.StateTensors()
                    use _ng = torch.no_grad ()
                    let blocks = SparseMoe.Blocks m
                    Expect.isNonEmpty blocks "sparse layers"
                    use gen = new torch.Generator(5UL)
                    let x = torch.randn([| 2L; 5L; 16L |], generator = gen)
                    for policy in policies do
                        for b in blocks do
                            b.Routing <- policy
                            b.Record <- true
                            let ours = b.forward(x).reshape(10L, 16L)
                            let counts = b.LastSelectedCount.data<int64>().ToArray()
                            let flat = x.reshape(10L, 16L)
                            for t in 0 .. 9 do
                                let expected, n = refBlock cfg.Moe w (b.FullName + ".") policy (vecOf (flat.select(0, int64 t)))
                                let err = maxAbs (ours.select(0, int64 t)) (torch.tensor(expected |> Array.map float32))
                                Expect.isLessThan err 2e-5f $"{policy} layer {b.LayerIndex} token {t}"
                                Expect.equal counts[t] (int64 n) $"{policy} layer {b.LayerIndex} token {t}: experts used"
                }
        ]
        test "mixtral config.json: HF keys and defaults" {
            let json = """{"architectures":["MixtralForCausalLM"],"model_type":"mixtral","vocab_size":32000,"hidden_size":4096,
                "intermediate_size":14336,"num_hidden_layers":32,"num_attention_heads":32,"num_key_value_heads":8,
                "max_position_embeddings":32768,"rms_norm_eps":1e-5,"rope_theta":1e6,"sliding_window":null,
                "num_local_experts":8,"num_experts_per_tok":2,"router_aux_loss_coef":0.02,"output_router_logits":false,
                "tie_word_embeddings":false,"bos_token_id":1,"eos_token_id":2,"hidden_act":"silu"}"""
            let c = DecoderConfig.FromJson json
            Expect.equal c.Family DecoderFamily.Mixtral "family"
            Expect.equal c.Moe.Style SparseMoeStyle.Mixtral "style"
            Expect.equal (c.Moe.NumExperts, c.Moe.ExpertsPerToken, c.Moe.ExpertIntermediateSize) (8, 2, 14336) "experts"
            Expect.isTrue c.Moe.NormTopKProb "Mixtral renormalises"
            Expect.equal c.Moe.SharedExpertIntermediateSize 0 "no shared expert"
            Expect.isFalse (c.QkvBias || c.OutputBias) "no biases"
            Expect.equal (c.Moe.DefaultRouting.ToString()) "top-k:2" "own routing"
            Expect.isTrue ([ 0 .. 31 ] |> List.forall c.Moe.IsSparseLayer) "every layer sparse"
            let back = DecoderConfig.FromJson(c.ToJson())
            Expect.equal (back.ToJson()) (c.ToJson()) "round trip"
        }
        test "qwen2-moe config.json (Qwen1.5-MoE-A2.7B keys): shared expert, sparse step, mlp_only_layers" {
            let json = """{"architectures":["Qwen2MoeForCausalLM"],"model_type":"qwen2_moe","vocab_size":151936,"hidden_size":2048,
                "intermediate_size":5632,"num_hidden_layers":24,"num_attention_heads":16,"num_key_value_heads":16,
                "max_position_embeddings":8192,"rms_norm_eps":1e-6,"rope_theta":1000000.0,"use_sliding_window":false,
                "sliding_window":32768,"max_window_layers":21,"decoder_sparse_step":1,"moe_intermediate_size":1408,
                "shared_expert_intermediate_size":5632,"num_experts_per_tok":4,"num_experts":60,"norm_topk_prob":false,
                "output_router_logits":false,"router_aux_loss_coef":0.001,"tie_word_embeddings":false,"hidden_act":"silu"}"""
            let c = DecoderConfig.FromJson json
            Expect.equal c.Family DecoderFamily.Qwen2Moe "family"
            Expect.isTrue (c.QkvBias && not c.OutputBias) "Qwen2's attention biases"
            let m = c.Moe
            Expect.equal (m.NumExperts, m.ExpertsPerToken, m.ExpertIntermediateSize, m.SharedExpertIntermediateSize) (60, 4, 1408, 5632) "sizes"
            Expect.isFalse m.NormTopKProb "norm_topk_prob false"
            Expect.isTrue m.SharedExpertGate "sigmoid-gated shared expert"
            Expect.isTrue ([ 0 .. 23 ] |> List.forall m.IsSparseLayer) "every layer sparse"
            let c2 = DecoderConfig.FromJson(json.Replace("\"decoder_sparse_step\":1", "\"decoder_sparse_step\":2,\"mlp_only_layers\":[3]"))
            Expect.equal ([ 0 .. 7 ] |> List.filter c2.Moe.IsSparseLayer) [ 1; 5; 7 ] "(i+1) % 2 = 0, minus mlp_only_layers"
            Expect.equal (DecoderConfig.FromJson(c2.ToJson()).ToJson()) (c2.ToJson()) "round trip"
        }
        test "deepseek-moe config.json (deepseek-moe-16b keys): shared experts, first_k_dense_replace, moe_layer_freq" {
            let json = """{"architectures":["DeepseekForCausalLM"],"model_type":"deepseek","vocab_size":102400,"hidden_size":2048,
                "intermediate_size":10944,"moe_intermediate_size":1408,"num_hidden_layers":28,"num_attention_heads":16,
                "num_key_value_heads":16,"n_shared_experts":2,"n_routed_experts":64,"num_experts_per_tok":6,"moe_layer_freq":1,
                "first_k_dense_replace":1,"norm_topk_prob":false,"scoring_func":"softmax","aux_loss_alpha":0.001,"seq_aux":true,
                "hidden_act":"silu","max_position_embeddings":4096,"rms_norm_eps":1e-6,"rope_theta":10000,"attention_bias":false,
                "tie_word_embeddings":false,"bos_token_id":100000,"eos_token_id":100001}"""
            let c = DecoderConfig.FromJson json
            Expect.equal c.Family DecoderFamily.DeepseekMoe "family"
            let m = c.Moe
            Expect.equal (m.NumExperts, m.ExpertsPerToken, m.ExpertIntermediateSize) (64, 6, 1408) "routed experts"
            Expect.equal (m.NumSharedExperts, m.SharedExpertIntermediateSize) (2, 2816) "two shared experts fused: width 2 × 1408"
            Expect.isFalse m.SharedExpertGate "ungated"
            Expect.equal m.RoutedScalingFactor 1.0 "no routed_scaling_factor in v1"
            Expect.equal ([ 0 .. 5 ] |> List.filter m.IsSparseLayer) [ 1 .. 5 ] "layer 0 dense"
            let c2 = DecoderConfig.FromJson(json.Replace("\"moe_layer_freq\":1", "\"moe_layer_freq\":2,\"routed_scaling_factor\":2.5"))
            Expect.equal ([ 0 .. 6 ] |> List.filter c2.Moe.IsSparseLayer) [ 2; 4; 6 ] "i >= 1 and i % 2 = 0"
            Expect.equal c2.Moe.RoutedScalingFactor 2.5 "routed_scaling_factor read"
            Expect.equal (DecoderConfig.FromJson(c2.ToJson()).ToJson()) (c2.ToJson()) "round trip"
        }
        test "bad MoE configs fail with one message naming the key" {
            let mixtral (extra: string) =
                """{"architectures":["MixtralForCausalLM"],"vocab_size":40,"hidden_size":16,"intermediate_size":8,
                "num_hidden_layers":1,"num_attention_heads":4,"num_key_value_heads":4""" + extra + "}"
            throwsWith<FormatException> (fun () -> DecoderConfig.FromJson(mixtral ""","num_local_experts":4,"num_experts_per_tok":5""") |> ignore)
                "num_experts_per_tok 5 is larger than num_local_experts 4" "k > experts"
            throwsWith<FormatException> (fun () -> DecoderConfig.FromJson(mixtral ""","mergedsl_routing":"top-p:1.5" """) |> ignore)
                "p must be in (0, 1], got 1.5" "p outside (0, 1]"
            throwsWith<FormatException> (fun () -> DecoderConfig.FromJson(mixtral ""","mergedsl_routing":"top-k:9" """) |> ignore)
                "top-k:9 asks for more experts than the 8" "routing k > experts"
            throwsWith<FormatException> (fun () -> DecoderConfig.FromJson("""{"architectures":["DbrxForCausalLM"],"vocab_size":4}""") |> ignore)
                "architectures [DbrxForCausalLM] is not a supported decoder" "unknown architecture"
            throwsWith<FormatException>
                (fun () -> DecoderConfig.FromJson("""{"model_type":"deepseek","vocab_size":40,"hidden_size":16,"intermediate_size":8,
                             "num_hidden_layers":1,"num_attention_heads":4,"n_routed_experts":4,"num_experts_per_tok":2,"scoring_func":"sigmoid"}""") |> ignore)
                "scoring_func 'sigmoid' is not supported" "DeepSeek-V3's sigmoid scoring"
        }
        test "routing policies: text round trip and bad values" {
            for text in [ "top-k:2"; "top-p:0.6"; "top-p:0.6,max:4"; "top-p:1"; "top-k:1" ] do
                Expect.equal (string (RoutingPolicy.Parse text)) text "round trip"
            Expect.equal (RoutingPolicy.Parse "top-p:0.6,max:4") (TopP(0.6, 4)) "record"
            throwsWith<ArgumentException> (fun () -> RoutingPolicy.Parse "top-p:0" |> ignore) "p must be in (0, 1], got 0" "p = 0"
            throwsWith<ArgumentException> (fun () -> RoutingPolicy.Parse "top-p:1.01" |> ignore) "got 1.01" "p > 1"
            throwsWith<ArgumentException> (fun () -> RoutingPolicy.Parse "top-p:NaN" |> ignore) "p must be in (0, 1]" "NaN"
            throwsWith<ArgumentException> (fun () -> RoutingPolicy.Parse "top-p:0.5,max:0" |> ignore) "max must be at least 1" "max 0"
            throwsWith<ArgumentException> (fun () -> RoutingPolicy.Parse "top-k:0" |> ignore) "k must be at least 1" "k 0"
            throwsWith<FormatException> (fun () -> RoutingPolicy.Parse "top-q:2" |> ignore) "routing 'top-q:2' is not" "unknown"
            throwsWith<FormatException> (fun () -> RoutingPolicy.Parse "top-k:two" |> ignore) "routing 'top-k:two' is not" "not a number"
            throwsWith<ArgumentException> (fun () -> (TopK 9).Validate 8 |> ignore) "top-k:9 asks for more experts than the 8" "k > experts"
        }
        test "top-p by hand: probabilities [0.5, 0.3, 0.15, 0.05]" {
            let row = [| [| 0.5f; 0.3f; 0.15f; 0.05f |] |]
            let pick policy = fst (route row policy false) |> List.head
            Expect.equal (pick (TopP 0.6)) [ 0; 1 ] "0.5 < 0.6 ≤ 0.8: two experts"
            Expect.equal (pick (TopP 0.9)) [ 0; 1; 2 ] "0.8 < 0.9 ≤ 0.95: three"
            Expect.equal (pick (TopP 0.5)) [ 0 ] "the first expert alone reaches 0.5"
            Expect.equal (pick (TopP 0.4)) [ 0 ] "one expert"
            Expect.equal (pick (TopP 1.0)) [ 0; 1; 2; 3 ] "p = 1: all four"
            Expect.equal (pick (TopP(0.9, 2))) [ 0; 1 ] "max caps three at two"
            Expect.equal (pick (TopP(1.0, 1))) [ 0 ] "max 1 is top-1"
            Expect.equal (pick (TopK 3)) [ 0; 1; 2 ] "top-3"
            // The same probabilities in another expert order: the choice follows probability, not position.
            let sel, _ = route [| [| 0.05f; 0.15f; 0.5f; 0.3f |] |] (TopP 0.6) false
            Expect.equal sel [ [ 2; 3 ] ] "experts 2 and 3"
            let _, w = route row (TopP 0.6) true
            Expect.floatClose Accuracy.high (float w[0]) 0.625 "renormalised: 0.5 / 0.8"
            Expect.floatClose Accuracy.high (float w[1]) 0.375 "0.3 / 0.8"
            Expect.equal (float w[2], float w[3]) (0.0, 0.0) "unselected weigh 0"
            let _, raw = route row (TopP 0.6) false
            Expect.equal (raw |> Array.map float) [| float 0.5f; float 0.3f; 0.0; 0.0 |] "without renormalisation: the probabilities"
            let sel2, _ = route [| [| 0.25f; 0.25f; 0.25f; 0.25f |]; [| 0.7f; 0.1f; 0.1f; 0.1f |] |] (TopP 0.6) false
            Expect.equal sel2 [ [ 0; 1; 2 ]; [ 0 ] ] "per token: a flat router needs three, a confident one one"
        }
        testList "top-k = dense compute with unselected experts zeroed" [
            for name, cfg in styles do
                test name {
                    use m = randomModel cfg 3L
                    use _ng = torch.no_grad ()
                    use gen = new torch.Generator(9UL)
                    let x = torch.randn([| 3L; 7L; 16L |], generator = gen)
                    for b in SparseMoe.Blocks m do
                        for policy in [ TopK 1 :> RoutingPolicy; TopK 2; TopP(0.7) ] do
                            b.Routing <- policy
                            b.DenseReference <- false
                            let sparse = b.forward x
                            b.DenseReference <- true
                            let dense = b.forward x
                            b.DenseReference <- false
                            Expect.isLessThan (maxAbs sparse dense) 1e-6f $"{policy} layer {b.LayerIndex}"
                }
            test "an expert no token is routed to is never run (NaN weights do not reach the output)" {
                use m = randomModel mixtralConfig 4L
                use _ng = torch.no_grad ()
                let b = (SparseMoe.Blocks m)[0]
                use gen = new torch.Generator(1UL)
                let x = torch.randn([| 40L; 16L |], generator = gen)
                b.Record <- true
                b.Routing <- TopK 1
                let before = b.forward x
                // The expert chosen least often (possibly never) gets NaN weights.
                let probs = b.LastRouterLogits.softmax(-1L)
                let top = probs.argmax(-1L).data<int64>().ToArray()
                let e = [ 0 .. 5 ] |> List.minBy (fun e -> top |> Array.filter (fun t -> t = int64 e) |> Array.length)
                b.Experts[e].Down.Weight.fill_(nan) |> ignore
                let after = b.forward x
                for t in 0 .. 39 do
                    let row = after.select(0, int64 t)
                    if top[t] = int64 e then Expect.isTrue (row.isnan().any().item<bool> ()) $"token {t} was routed to the NaN expert"
                    else Expect.isLessThan (maxAbs row (before.select(0, int64 t))) 1e-7f $"token {t} untouched"
                b.DenseReference <- true
                Expect.isTrue ((b.forward x).isnan().any().item<bool> ()) "dense compute runs the NaN expert on every token"
            }
        ]
        testList "model logits = plain-ops reference" [
            for name, cfg in styles do
                test name {
                    use m = randomModel cfg 21L
                    let w = m.StateTensors()
                    use _ng = torch.no_grad ()
                    let ids = [| 1; 5; 9; 2; 33; 7 |]
                    for policy in [ cfg.Moe.DefaultRouting; TopP(0.7, 3) ] do
                        SparseMoe.SetRouting(m, policy)
                        let ours = m.Forward(ids2d [ ids ]).select(0, 0L)
                        let expected = torch.tensor(refLogits cfg policy w ids |> Array.concat |> Array.map float32).reshape(6L, 40L)
                        let scale = expected.abs().max().item<float32> ()
                        Expect.isGreaterThan scale 0.5f "logits are not trivially small"
                        Expect.isLessThan (maxAbs ours expected) (3e-5f * max 1.0f scale) $"{policy}"
                    SparseMoe.SetRouting(m, null)
                    Expect.equal (SparseMoe.Blocks m |> Seq.map (fun b -> b.Routing) |> Seq.distinct |> List.ofSeq) [ cfg.Moe.DefaultRouting ] "null: the model's own"
                }
        ]
        testList "KV cache and causality" [
            for name, cfg in styles do
                test $"{name}: cached generation = full recomputation; later tokens leave earlier logits alone" {
                    use m = randomModel cfg 8L
                    for policy in [ cfg.Moe.DefaultRouting; TopP 0.6 ] do
                        SparseMoe.SetRouting(m, policy)
                        let opts cache = GenerationOptions(MaxNewTokens = 10, UseCache = cache, KeepLogits = true)
                        let a = DecoderGeneration.Generate(m, [| 3; 1; 4 |], opts true)
                        let b = DecoderGeneration.Generate(m, [| 3; 1; 4 |], opts false)
                        Expect.sequenceEqual a.Tokens b.Tokens $"{policy}: same tokens"
                        for s in 0 .. a.StepLogits.Count - 1 do
                            let d = Array.map2 (fun (p: float32) q -> abs (p - q)) a.StepLogits[s] b.StepLogits[s] |> Array.max
                            Expect.isLessThan d 1e-4f $"{policy}: step {s} logits"
                        use _ng = torch.no_grad ()
                        let one = m.Forward(ids2d [ [| 3; 1; 4; 1; 5; 9 |] ])
                        let two = m.Forward(ids2d [ [| 3; 1; 4; 7; 5; 9 |] ])
                        // Not bit-exact: grouped dispatch gives each expert's matmul another row count, which can change
                        // libtorch's blocking and so the last bits; a leak from the future would change far more.
                        Expect.isLessThan (maxAbs (one.narrow(1, 0L, 3L)) (two.narrow(1, 0L, 3L))) 1e-5f $"{policy}: positions 0..2 unchanged"
                        Expect.isGreaterThan (maxAbs (one.narrow(1, 3L, 3L)) (two.narrow(1, 3L, 3L))) 0.0f "later positions do change"
                }
        ]
        testList "folders: written with our writer, read back with HF names" [
            for name, cfg in styles do
                test name {
                    let dir = tempDir ()
                    try
                        use m = randomModel cfg 5L
                        let folder = Path.Combine(dir, name)
                        DecoderModelFolder.Save(folder, m, DecoderModelFolder.ByteTokenizerFiles())
                        let names = m.StateTensors().Keys |> set
                        Expect.equal names (expectedNames cfg) "HF parameter names"
                        use back = DecoderModelFolder.Load folder
                        Expect.equal (back.Config.ToJson()) (cfg.ToJson()) "config round trip"
                        let a, b = m.StateTensors(), back.StateTensors()
                        Expect.equal (set b.Keys) names "same names back"
                        for KeyValue(k, v) in a do
                            Expect.equal (maxAbs v b[k]) 0.0f k
                        Expect.equal (SparseMoe.Blocks back).Count (SparseMoe.Blocks m).Count "sparse layers"
                    finally
                        Directory.Delete(dir, true)
                }
        ]
        test "routing statistics: usage sums to tokens × k; top-p reports its mean experts per token" {
            use m = randomModel mixtralConfig 6L
            use _ng = torch.no_grad ()
            let ids = ids2d [ [| 1; 2; 3; 4; 5 |]; [| 6; 7; 8; 9; 10 |] ]
            do
                use stats = new RoutingStatistics(m)
                m.Forward ids |> ignore
                for l in stats.Layers do
                    Expect.equal (stats.Tokens l) 10L "tokens"
                    Expect.equal (stats.Usage l |> Seq.fold (+) 0L) 20L "two experts each"
                    Expect.floatClose Accuracy.high (stats.ProbabilityMass l |> Seq.fold (+) 0.0) 10.0 "probabilities sum to 1 per token"
                Expect.equal (stats.MeanExpertsPerToken()) 2.0 "top-2"
            Expect.isTrue (SparseMoe.Blocks m |> Seq.forall (fun b -> isNull b.Observer)) "detached"
            SparseMoe.SetRouting(m, TopP 0.9)
            for b in SparseMoe.Blocks m do b.Record <- true
            use stats = new RoutingStatistics(m)
            m.Forward ids |> ignore
            let counted = SparseMoe.Blocks m |> Seq.sumBy (fun b -> b.LastSelectedCount.sum().item<int64> ())
            Expect.floatClose Accuracy.high (stats.MeanExpertsPerToken()) (float counted / 20.0) "mean of LastSelectedCount"
            throwsWith<ArgumentException> (fun () -> SparseMoe.SetRouting(m, TopK 7)) "top-k:7 asks for more experts than the 6" "k > experts"
            use dense = DecoderModelFolder.Random(DecoderConfig(Family = DecoderFamily.Llama, VocabSize = 40, HiddenSize = 16, IntermediateSize = 20,
                                                                NumHiddenLayers = 1, NumAttentionHeads = 4, NumKeyValueHeads = 2, HeadDim = 4), 1L)
            throwsWith<ArgumentException> (fun () -> SparseMoe.SetRouting(dense, TopK 1)) "has no sparse MoE blocks" "dense model"
        }
        testSequenced <| testList "command line" [
            test "score --routing: experts per token in text and JSON; bad values are one line (exit 2; an unknown architecture exit 1, as for dense models)" {
                let dir = tempDir ()
                try
                    use m = DecoderModelFolder.Random(byteMixtral, 2L, 0.3)
                    let folder = Path.Combine(dir, "mixtral")
                    DecoderModelFolder.Save(folder, m, DecoderModelFolder.ByteTokenizerFiles())
                    let text = Path.Combine(dir, "t.txt")
                    File.WriteAllText(text, "sparse experts")
                    let json args =
                        let code, out, err = CliHarness.mergedsl ([ "score"; folder; "--text"; text; "--json" ] @ args)
                        Expect.equal code 0 err
                        JsonDocument.Parse(out).RootElement
                    let own = json []
                    Expect.equal (own.GetProperty("routing").GetString()) "top-k:2" "the model's own routing"
                    Expect.equal (own.GetProperty("experts_per_token").GetDouble()) 2.0 "two per token"
                    let one = json [ "--routing"; "top-k:1" ]
                    Expect.equal (one.GetProperty("experts_per_token").GetDouble()) 1.0 "top-1"
                    Expect.notEqual (one.GetProperty("bits_per_byte").GetDouble()) (own.GetProperty("bits_per_byte").GetDouble()) "routing changes the score"
                    let all = json [ "--routing"; "top-p:1" ]
                    Expect.equal (all.GetProperty("experts_per_token").GetDouble()) 4.0 "p = 1 takes every expert"
                    let tp = json [ "--routing"; "top-p:0.6,max:3" ]
                    let k = tp.GetProperty("experts_per_token").GetDouble()
                    Expect.isTrue (k >= 1.0 && k <= 3.0) $"top-p within [1, max]: {k}"
                    let code, out, err = CliHarness.mergedsl [ "score"; folder; "--text"; text; "--routing"; "top-k:1" ]
                    Expect.equal code 0 err
                    Expect.stringContains out "experts per token    1.000 (top-k:1)" "text output"
                    expectOneLineFailure (CliHarness.mergedsl [ "score"; folder; "--text"; text; "--routing"; "top-p:1.5" ]) 2 "--routing: routing top-p:1.5: p must be in (0, 1], got 1.5"
                    expectOneLineFailure (CliHarness.mergedsl [ "score"; folder; "--text"; text; "--routing"; "top-k:5" ]) 2 "top-k:5 asks for more experts than the 4"
                    expectOneLineFailure (CliHarness.mergedsl [ "score"; folder; "--text"; text; "--routing"; "top-z" ]) 2 "routing 'top-z' is not"
                    expectOneLineFailure (CliHarness.mergedsl [ "generate"; folder; "--prompt"; "a"; "--routing"; "top-p:0" ]) 2 "p must be in (0, 1], got 0"
                    let code, out, err = CliHarness.mergedsl [ "generate"; folder; "--prompt"; "ab"; "--max-new-tokens"; "3"; "--routing"; "top-k:1"; "--json" ]
                    Expect.equal code 0 err
                    Expect.equal (JsonDocument.Parse(out).RootElement.GetProperty("experts_per_token").GetDouble()) 1.0 "generate reports it too"
                    File.WriteAllText(Path.Combine(folder, "config.json"), File.ReadAllText(Path.Combine(folder, "config.json")).Replace("MixtralForCausalLM", "JambaForCausalLM"))
                    expectOneLineFailure (CliHarness.mergedsl [ "score"; folder; "--text"; text ]) 1 "architectures [JambaForCausalLM] is not a supported decoder"
                finally
                    Directory.Delete(dir, true)
            }
            test "bench moe runs on the smoke shape (no timing assertions)" {
                let code, out, err = CliHarness.mergedsl [ "bench"; "moe"; "--size"; "smoke"; "--runs"; "1"; "--json" ]
                Expect.equal code 0 err
                let r = JsonDocument.Parse(out).RootElement[0]
                let variants = [ for v in r.GetProperty("variants").EnumerateArray() -> v.GetProperty("routing").GetString(), v.GetProperty("experts_per_token").GetDouble() ]
                Expect.equal (variants |> List.map fst) [ "top-1"; "top-2"; "top-p:0.5"; "top-p:0.8"; "dense" ] "variants"
                Expect.equal (variants |> List.take 2 |> List.map snd) [ 1.0; 2.0 ] "top-k experts per token"
                Expect.equal (snd (List.last variants)) 8.0 "dense runs all 8"
            }
        ]
    ]
