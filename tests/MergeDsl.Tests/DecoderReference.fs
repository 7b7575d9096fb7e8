/// An independent, loop-based forward pass of Llama / Mistral / Qwen2 over plain double arrays, written from
/// the transformers modelling code's definitions (not from the runtime): the check the runtime's logits are
/// compared against while transformers' own fixtures are still owed.
module MergeDsl.Tests.DecoderReference

open System
open System.Collections.Generic
open TorchSharp
open MergeDsl.Core.Models.Decoder

type private Matrix = { Rows: int; Cols: int; Data: double[] }

let private matrixOf (t: torch.Tensor) =
    let t2 = if t.dim () = 1L then t.unsqueeze 0L else t
    let data = t2.to_type(torch.ScalarType.Float64).contiguous().data<double>().ToArray()
    { Rows = int t2.shape[0]; Cols = int t2.shape[1]; Data = data }

/// y = W x + b, W [out, in].
let private linear (w: Matrix) (b: Matrix option) (x: double[]) =
    Array.init w.Rows (fun o ->
        let mutable s = match b with Some b -> b.Data[o] | None -> 0.0
        for i in 0 .. w.Cols - 1 do s <- s + w.Data[o * w.Cols + i] * x[i]
        s)

let private rms (w: Matrix) (eps: float) (x: double[]) =
    let ms = (x |> Array.sumBy (fun v -> v * v)) / float x.Length
    let r = 1.0 / Math.Sqrt(ms + eps)
    Array.init x.Length (fun i -> x[i] * r * w.Data[i])

/// The rotary angle per position of each of the d/2 pairs: θ^(−2i/d), rescaled as the config's rope_scaling says.
/// Written from the published definitions, in a different form from the runtime's: linear (position
/// interpolation) divides every frequency by the factor; llama3 multiplies frequency f by
/// (1 − s)/factor + s with s = clamp((L·f/2π − low)/(high − low), 0, 1), L the original context, which is 1 for
/// short wavelengths, 1/factor for long ones and a linear ramp in L/wavelength between.
let inverseFrequencies (cfg: DecoderConfig) : double[] =
    let d = cfg.HeadDim
    Array.init (d / 2) (fun i ->
        let f = 1.0 / Math.Pow(cfg.RopeTheta, float (2 * i) / float d)
        match cfg.RopeScaling with
        | null -> f
        | :? RopeScaling.Linear as l -> f / l.Factor
        | :? RopeScaling.Llama3 as l ->
            let ratio = float l.OriginalMaxPositionEmbeddings * f / (2.0 * Math.PI)
            let s = Math.Clamp((ratio - l.LowFreqFactor) / (l.HighFreqFactor - l.LowFreqFactor), 0.0, 1.0)
            f * ((1.0 - s) / l.Factor + s)
        | other -> failwith $"no reference for rope_scaling {other}")

/// HF pairs dimension i with i + d/2; the angle of pair i at position p is p · invFreq[i].
let private rope (invFreq: double[]) (pos: int) (v: double[]) =
    let d = v.Length
    let half = d / 2
    let out = Array.zeroCreate d
    for i in 0 .. half - 1 do
        let angle = float pos * invFreq[i]
        let a, b = v[i], v[i + half]
        out[i] <- a * Math.Cos angle - b * Math.Sin angle
        out[i + half] <- b * Math.Cos angle + a * Math.Sin angle
    out

let private silu z = z / (1.0 + Math.Exp(-z))

/// A [out, in] weight as a function of a vector (y = W x), for other references' feed-forward blocks.
let linearOf (w: torch.Tensor) : double[] -> double[] =
    let m = matrixOf w
    linear m None

/// Logits [T][vocab] of one sequence; <c>ffn layerPrefix x</c> computes layer's feed-forward block on one
/// normed token (<c>layerPrefix</c> = <c>model.layers.N.</c>), so MoE references can plug in their own.
let forwardWith (ffn: string -> double[] -> double[]) (cfg: DecoderConfig) (weights: IReadOnlyDictionary<string, torch.Tensor>) (ids: int[]) : double[][] =
    let W name = matrixOf weights[name]
    let B name = if weights.ContainsKey name then Some(matrixOf weights[name]) else None
    let embed = W "model.embed_tokens.weight"
    let hidden = cfg.HiddenSize
    let d = cfg.HeadDim
    let invFreq = inverseFrequencies cfg
    let mutable xs = ids |> Array.map (fun id -> Array.sub embed.Data (id * hidden) hidden)
    for l in 0 .. cfg.NumHiddenLayers - 1 do
        let p = $"model.layers.{l}."
        let h = xs |> Array.map (rms (W(p + "input_layernorm.weight")) cfg.RmsNormEps)
        let proj name x = linear (W(p + $"self_attn.{name}.weight")) (B(p + $"self_attn.{name}.bias")) x
        let qs = h |> Array.map (proj "q_proj")
        let ks = h |> Array.map (proj "k_proj")
        let vs = h |> Array.map (proj "v_proj")
        let heads = cfg.NumAttentionHeads
        let groups = heads / cfg.NumKeyValueHeads
        let attnOut =
            Array.init xs.Length (fun t ->
                let concat = Array.zeroCreate (heads * d)
                for hh in 0 .. heads - 1 do
                    let kvh = hh / groups
                    let q = rope invFreq t (Array.sub qs[t] (hh * d) d)
                    let scores =
                        Array.init (t + 1) (fun s ->
                            let k = rope invFreq s (Array.sub ks[s] (kvh * d) d)
                            (Array.fold2 (fun acc a b -> acc + a * b) 0.0 q k) / Math.Sqrt(float d))
                    let m = Array.max scores
                    let e = scores |> Array.map (fun s -> Math.Exp(s - m))
                    let z = Array.sum e
                    for s in 0 .. t do
                        for j in 0 .. d - 1 do
                            concat[hh * d + j] <- concat[hh * d + j] + e[s] / z * vs[s][kvh * d + j]
                concat |> proj "o_proj")
        xs <- Array.map2 (Array.map2 (+)) xs attnOut
        let h2 = xs |> Array.map (rms (W(p + "post_attention_layernorm.weight")) cfg.RmsNormEps)
        let ff = h2 |> Array.map (ffn p)
        xs <- Array.map2 (Array.map2 (+)) xs ff
    let head = if cfg.TieWordEmbeddings then embed else W "lm_head.weight"
    xs |> Array.map (rms (W "model.norm.weight") cfg.RmsNormEps >> linear head None)

/// Logits [T][vocab] of one sequence of a dense Llama / Mistral / Qwen2.
let forward (cfg: DecoderConfig) (weights: IReadOnlyDictionary<string, torch.Tensor>) (ids: int[]) : double[][] =
    let W name = matrixOf weights[name]
    let B name = if weights.ContainsKey name then Some(matrixOf weights[name]) else None
    let dense p x =
        let mlp name x = linear (W(p + $"mlp.{name}.weight")) (B(p + $"mlp.{name}.bias")) x
        Array.map2 (fun g u -> silu g * u) (mlp "gate_proj" x) (mlp "up_proj" x) |> mlp "down_proj"
    forwardWith dense cfg weights ids
