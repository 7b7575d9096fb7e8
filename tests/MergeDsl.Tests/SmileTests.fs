module MergeDsl.Tests.SmileTests

open Expecto
open TorchSharp
open MergeDsl.Core.Models
open MergeDsl.Core.Moe
open MergeDsl.Tests.ClipTests
open MergeDsl.Tests.WemoeTests

[<Tests>]
let tests =
    testList "SMILE" [
        test "full rank, one expert, top-1 equals the fine-tuned model" {
            use _ = torch.NewDisposeScope()
            let cfg = tinyConfig "quick_gelu"
            let b, experts = zoo cfg 21L 1
            let spec = UpscaleSpec(Kind = MoeKind.Smile, Rank = 1000, GateRank = 2, RestLambda = 1.0, Modules = [| "*.mlp"; "*.self_attn.*_proj" |])
            let moe = upscale cfg b experts spec
            use _m = moe.Model
            use expert = new ClipVisionModel(cfg)
            expert.LoadWeights(experts.[0]) |> ignore
            use _ng = torch.no_grad ()
            let x = torch.randn([| 3L; 3L; 8L; 8L |])
            Expect.isLessThan (maxDiff (moe.Model.forward x) (expert.forward x)) 1e-4f "same outputs"
            Expect.equal moe.Sites.Count (2 * 6) "fc1, fc2, q, k, v, out per layer"
        }

        test "routing: the gate sends an input along expert j's top singular direction to expert j" {
            use _ = torch.NewDisposeScope()
            let cfg = tinyConfig "quick_gelu"
            let b, experts = zoo cfg 22L 3
            let moe = upscale cfg b experts (UpscaleSpec(Kind = MoeKind.Smile, Rank = 4, GateRank = 1))
            use _m = moe.Model
            let s = moe.Sites.["vision_model.encoder.layers.0.mlp.fc1"] :?> SmileLinear
            use _ng = torch.no_grad ()
            for j in 0..2 do
                let v = s.GateWeight.narrow(0L, int64 j, 1L).mul(torch.tensor 10.0f)   // [1, in]
                let p = s.Probabilities(v)
                Expect.equal (p.argmax(-1L).item<int64> ()) (int64 j) $"expert {j}"
                Expect.floatClose Accuracy.medium (float (p.sum().item<float32> ())) 1.0 "top-1 renormalised to 1"
        }

        test "dense routing at full rank is W0 x + Σ p_i ΔW_i x" {
            use _ = torch.NewDisposeScope()
            let cfg = tinyConfig "quick_gelu"
            let b, experts = zoo cfg 23L 2
            let moe = upscale cfg b experts (UpscaleSpec(Kind = MoeKind.Smile, Rank = 1000, GateRank = 3, Routing = RouterSelection.Dense))
            use _m = moe.Model
            let path = "vision_model.encoder.layers.1.mlp.fc2"
            let s = moe.Sites.[path] :?> SmileLinear
            use _ng = torch.no_grad ()
            let x = torch.randn([| 2L; 4L; 32L |])
            let p = s.Probabilities x
            let lin (w: System.Collections.Generic.Dictionary<string, torch.Tensor>) = torch.nn.functional.linear(x, w.[path + ".weight"], w.[path + ".bias"])
            let y0 = lin b
            let mutable expected = y0
            for i in 0..1 do
                expected <- expected + (lin experts.[i] - y0) * p.narrow(-1L, int64 i, 1L)
            Expect.isLessThan (maxDiff (s.forward x) expected) 1e-4f "mixture of full-rank deltas"
        }
    ]
