module MergeDsl.Tests.ClipTests

open System.Collections.Generic
open Expecto
open TorchSharp
open MergeDsl.Core.Models

type T = torch.Tensor

/// A tiny CLIP vision config used across the MoE tests.
let tinyConfig act =
    ClipVisionConfig(
        HiddenSize = 16, IntermediateSize = 32, NumHiddenLayers = 2, NumAttentionHeads = 2,
        ImageSize = 8, PatchSize = 4, NumChannels = 3, HiddenAct = act, LayerNormEps = 1e-5,
        ProjectionDim = 8)

/// A model with every parameter drawn at random (biases and norms too), from a seed.
let randomModel (cfg: ClipVisionConfig) (seed: int64) =
    torch.manual_seed seed |> ignore
    let m = new ClipVisionModel(cfg)
    use _ = torch.no_grad ()
    for KeyValue(_, p) in m.ParametersByName() do
        p.copy_(torch.randn(p.shape).mul(torch.tensor 0.2f)) |> ignore
    m

/// Independent reference: the CLIP vision forward written with plain tensor ops over a name->tensor map.
let referenceForward (cfg: ClipVisionConfig) (w: IReadOnlyDictionary<string, T>) (x: T) : T =
    let W (n: string) = w.[n]
    let layerNorm (h: T) (prefix: string) =
        let mu = h.mean([| -1L |], true)
        let var = (h - mu).pow(torch.tensor 2.0f).mean([| -1L |], true)
        (h - mu) / (var + torch.tensor (float32 cfg.LayerNormEps)).sqrt() * W(prefix + ".weight") + W(prefix + ".bias")
    let linear (h: T) (prefix: string) = torch.matmul(h, W(prefix + ".weight").t()) + W(prefix + ".bias")
    let b = x.shape.[0]
    let g = int64 (cfg.ImageSize / cfg.PatchSize)
    let p = int64 cfg.PatchSize
    let c = int64 cfg.NumChannels
    let d = int64 cfg.HiddenSize
    // patches as rows: [B, g*g, C*p*p] in (c, kh, kw) order, matching the conv weight's layout
    let patches = x.reshape([| b; c; g; p; g; p |]).permute([| 0L; 2L; 4L; 1L; 3L; 5L |]).reshape([| b; g * g; c * p * p |])
    let pe = W("vision_model.embeddings.patch_embedding.weight").reshape([| d; c * p * p |])
    let tokens = torch.matmul(patches, pe.t())
    let cls = W("vision_model.embeddings.class_embedding").reshape([| 1L; 1L; d |]).expand([| b; 1L; d |])
    let mutable h = torch.cat([| cls; tokens |], 1L) + W("vision_model.embeddings.position_embedding.weight")
    h <- layerNorm h "vision_model.pre_layrnorm"
    let heads = int64 cfg.NumAttentionHeads
    let hd = d / heads
    for i in 0 .. cfg.NumHiddenLayers - 1 do
        let pre = sprintf "vision_model.encoder.layers.%d" i
        let a = layerNorm h (pre + ".layer_norm1")
        let q = linear a (pre + ".self_attn.q_proj")
        let k = linear a (pre + ".self_attn.k_proj")
        let v = linear a (pre + ".self_attn.v_proj")
        let outs =
            [| for hh in 0L .. heads - 1L ->
                let qs = q.narrow(2L, hh * hd, hd)
                let ks = k.narrow(2L, hh * hd, hd)
                let vs = v.narrow(2L, hh * hd, hd)
                let scores = torch.matmul(qs, ks.transpose(1L, 2L)) / torch.tensor (sqrt (float32 hd))
                let e = (scores - scores.amax([| -1L |], true)).exp()
                torch.matmul(e / e.sum([| -1L |], true), vs) |]
        h <- h + linear (torch.cat(outs, 2L)) (pre + ".self_attn.out_proj")
        let m = layerNorm h (pre + ".layer_norm2")
        let f = linear m (pre + ".mlp.fc1")
        let act =
            if cfg.HiddenAct = "quick_gelu" then f * torch.sigmoid(f * torch.tensor 1.702f)
            else f * (torch.tensor 1.0f + torch.special.erf(f / torch.tensor (sqrt 2.0f))) * torch.tensor 0.5f
        h <- h + linear act (pre + ".mlp.fc2")
    let pooled = layerNorm (h.select(1L, 0L)) "vision_model.post_layernorm"
    torch.matmul(pooled, W("visual_projection.weight").t())

let hfNames (layers: int) =
    [ "vision_model.embeddings.class_embedding"
      "vision_model.embeddings.patch_embedding.weight"
      "vision_model.embeddings.position_embedding.weight"
      "vision_model.pre_layrnorm.weight"; "vision_model.pre_layrnorm.bias"
      for i in 0 .. layers - 1 do
          for m in [ "self_attn.k_proj"; "self_attn.v_proj"; "self_attn.q_proj"; "self_attn.out_proj"; "layer_norm1"; "mlp.fc1"; "mlp.fc2"; "layer_norm2" ] do
              for p in [ "weight"; "bias" ] do
                  sprintf "vision_model.encoder.layers.%d.%s.%s" i m p
      "vision_model.post_layernorm.weight"; "vision_model.post_layernorm.bias"
      "visual_projection.weight" ]

[<Tests>]
let tests =
    testList "CLIP vision runtime" [
        test "parameter names and shapes are Hugging Face's" {
            let cfg = tinyConfig "quick_gelu"
            use m = new ClipVisionModel(cfg)
            let ps = m.ParametersByName()
            Expect.equal (Set.ofSeq ps.Keys) (Set.ofList (hfNames 2)) "names"
            Expect.sequenceEqual ps.["vision_model.embeddings.patch_embedding.weight"].shape [| 16L; 3L; 4L; 4L |] "patch"
            Expect.sequenceEqual ps.["vision_model.embeddings.position_embedding.weight"].shape [| 5L; 16L |] "positions = (8/4)^2 + 1"
            Expect.sequenceEqual ps.["vision_model.encoder.layers.1.mlp.fc1.weight"].shape [| 32L; 16L |] "fc1 [out, in]"
            Expect.sequenceEqual ps.["visual_projection.weight"].shape [| 8L; 16L |] "projection"
        }

        for act in [ "quick_gelu"; "gelu" ] do
            test $"forward matches an independent plain-ops implementation ({act})" {
                use _ = torch.NewDisposeScope()
                let cfg = tinyConfig act
                use m = randomModel cfg 7L
                let w = m.StateTensors()
                let x = torch.randn([| 3L; 3L; 8L; 8L |])
                use _ng = torch.no_grad ()
                let ours = m.forward x
                let theirs = referenceForward cfg w x
                Expect.sequenceEqual ours.shape [| 3L; 8L |] "[B, projection_dim]"
                let err = (ours - theirs).abs().max().item<float32> ()
                Expect.isLessThan err 1e-4f "max abs difference"
            }

        // Golden outputs of transformers' CLIPVisionModelWithProjection (scripts/golden/hf_clip_vision.py, run on a
        // PyTorch machine): the folder as save_pretrained wrote it must load and give the same embeddings.
        for act in [ "quick_gelu"; "gelu" ] do
            test $"a save_pretrained folder of transformers' CLIPVisionModelWithProjection gives its outputs ({act})" {
                use _ = torch.NewDisposeScope()
                let folder = System.IO.Path.Combine(System.AppContext.BaseDirectory, "fixtures", "hf-clip", act)
                let struct (model, heads) = ClipModelFolder.LoadPlain folder
                use model = model
                Expect.equal heads.Count 0 "no heads in a transformers folder"
                Expect.equal model.Config.HiddenAct act "hidden_act read from transformers' config.json"
                use golden = MergeDsl.Core.Checkpoints.Checkpoint.Open(System.IO.Path.Combine(folder, "golden.safetensors"))
                let pixels = golden.Load "pixel_values"
                use _ng = torch.no_grad ()
                let check (name: string) (ours: T) =
                    let theirs = golden.Load name
                    Expect.sequenceEqual ours.shape theirs.shape $"{name} shape"
                    let scale = theirs.abs().max().item<float32> ()
                    let err = (ours - theirs).abs().max().item<float32> ()
                    // float32 throughout, different kernels: agreement to ~1e-6 of the output's scale.
                    Expect.isLessThan err (1e-5f * max 1.0f scale) $"{name}: max |ours - transformers| = {err} (scale {scale})"
                check "image_embeds" (model.forward pixels)
                check "last_hidden_state" (model.Hidden pixels)
            }

        test "config.json: full CLIPConfig and bare vision config both parse; bad ones fail clearly" {
            let full = """{"projection_dim": 8, "vision_config": {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "image_size": 8, "patch_size": 4, "hidden_act": "gelu"}, "text_config": {"hidden_size": 99}}"""
            let c = ClipVisionConfig.FromJson full
            Expect.equal (c.HiddenSize, c.ProjectionDim, c.HiddenAct, c.NumChannels) (16, 8, "gelu", 3) "fields"
            let back = ClipVisionConfig.FromJson(c.ToJson())
            Expect.equal back c "ToJson round trip"
            let bad = """{"hidden_size": 15, "num_attention_heads": 2}"""
            let e = Expect.throwsT<System.FormatException> (fun () -> ClipVisionConfig.FromJson(bad, "x/config.json") |> ignore) "indivisible"
            ()
        }

        test "loading names missing and mis-shaped parameters" {
            let cfg = tinyConfig "quick_gelu"
            use m = new ClipVisionModel(cfg)
            let w = m.StateTensors()
            w.Remove "vision_model.post_layernorm.bias" |> ignore
            w.["visual_projection.weight"] <- torch.zeros([| 7L; 16L |])
            w.["text_model.foo"] <- torch.zeros([| 1L |])
            try
                m.LoadWeights(w, "ckpt.safetensors") |> ignore
                failtest "should fail"
            with :? ModelWeightsException as e ->
                Expect.stringContains e.Message "ckpt.safetensors" "label"
                Expect.stringContains e.Message "vision_model.post_layernorm.bias" "missing"
                Expect.stringContains e.Message "visual_projection.weight [7,16] (model expects [8,16])" "shape"
        }

        test "loading copies values and ignores extra (text) names" {
            let cfg = tinyConfig "quick_gelu"
            use a = randomModel cfg 1L
            use b = new ClipVisionModel(cfg)
            let w = a.StateTensors()
            w.["logit_scale"] <- torch.zeros([| 1L |])
            let extra = b.LoadWeights(w)
            Expect.sequenceEqual extra [ "logit_scale" ] "ignored names"
            use _ = torch.no_grad ()
            let x = torch.randn([| 2L; 3L; 8L; 8L |])
            Expect.isTrue ((a.forward x).allclose(b.forward x, 0.0, 0.0)) "same outputs"
        }

        test "batched inference equals one big forward, u8 images are normalised" {
            use _ = torch.NewDisposeScope()
            let cfg = tinyConfig "quick_gelu"
            use m = randomModel cfg 3L
            let imgs = torch.randint(0L, 256L, [| 10L; 3L; 8L; 8L |], dtype = torch.uint8)
            let e = ClipInference.Embed(m, imgs, 3, torch.CPU)
            use _ng = torch.no_grad ()
            let x = ImagePreprocess.Symmetric(3).Apply(imgs, torch.CPU)
            let direct = m.forward x
            Expect.isLessThan ((e - direct).abs().max().item<float32> ()) 1e-5f "same embeddings"
            use head = new ClassificationHead("t", torch.randn([| 4L; 8L |]), 100.0f)
            let logits = ClipInference.Logits(m, head, imgs, 4, torch.CPU)
            let expected = torch.nn.functional.normalize(direct, dim = -1L).matmul(head.Weight.t()).mul(torch.tensor 100.0f)
            Expect.isLessThan ((logits - expected).abs().max().item<float32> ()) 1e-4f "head logits"
        }
    ]
