/// Sparse MoE blocks (Mixtral, Qwen2-MoE, DeepSeek-MoE): an independent per-token plain-ops reference (explicit
/// softmax, top-k, top-p over double arrays, written here from the transformers / DeepSeek modelling code's
/// definitions) against the runtime's grouped dispatch; hand-checked routing numbers; HF names and configs;
/// KV cache and causality.
module MergeDsl.Tests.SparseMoeTests

open System
open System.IO
open System.Collections.Generic
open Expecto
open TorchSharp
open MergeDsl.Core.Models.Decoder
open MergeDsl.Core.Moe.Sparse

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
    DecoderConfig(Family = family, VocabSize = 40, HiddenSize = 16, IntermediateSize = 20, NumHiddenLayers = layers,
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
    ]
