/// Real torch.save files (PyTorch 1.13.1, scripts/golden/torch_pickles.py; fixtures/torch/golden.txt is what the script
/// printed) read by the restricted unpickler: zip and legacy formats, f32/f16/bf16/i64, a transposed view, views sharing
/// one storage at an offset, a sharded pytorch_model.bin.index.json and a PEFT adapter_model.bin.
module MergeDsl.Tests.TorchFixtureTests

open System
open System.IO
open Expecto
open TorchSharp
open MergeDsl.Core.Checkpoints

let private fixture (parts: string list) = Path.Combine(Array.ofList (AppContext.BaseDirectory :: "fixtures" :: "torch" :: parts))

let private values (t: torch.Tensor) = t.to_type(torch.ScalarType.Float64).contiguous().data<float>().ToArray() |> List.ofArray

let private grid = [ for i in 0 .. 11 -> float i / 4.0 - 1.0 ]

/// name, dtype, shape, values (row-major), as the script printed them.
let private expected: (string * torch.ScalarType * int64 list * float list) list =
    [ "model.embed_tokens.weight", torch.float32, [ 3L; 4L ], grid
      "model.layers.0.self_attn.q_proj.weight", torch.float32, [ 4L; 3L ],
      [ -1.0; 0.0; 1.0; -0.75; 0.25; 1.25; -0.5; 0.5; 1.5; -0.25; 0.75; 1.75 ]
      "model.layers.0.mlp.up_proj.weight", torch.float16, [ 3L; 4L ], grid
      "model.layers.0.input_layernorm.weight", torch.bfloat16, [ 3L ], [ 0.5; -0.25; 2.0 ]
      "model.norm.weight", torch.float32, [ 3L ], [ -2.0; 3.25; 4.0 ]
      "lm_head.weight", torch.float32, [ 2L; 3L ], [ 1.5; -2.0; 3.25; 4.0; -5.5; 6.0 ] ]

let private check (src: ITensorSource) =
    Expect.equal [ for t in src.Tensors -> t.Name ] ([ for n, _, _, _ in expected -> n ] @ [ "position_ids" ]) "every tensor, in file order"
    for name, dtype, shape, xs in expected do
        use t = src.Load name
        Expect.equal t.dtype dtype $"{name}: dtype"
        Expect.equal (List.ofArray t.shape) shape $"{name}: shape"
        Expect.equal (values t) xs $"{name}: values"
    use ids = src.Load "position_ids"
    Expect.equal ids.dtype torch.int64 "i64"
    Expect.equal (ids.data<int64>().ToArray() |> List.ofArray) [ 7L; -8L; 9L; 1099511627776L ] "i64 values beyond 32 bits"

[<Tests>]
let tests =
    testSequenced <| testList "PyTorch fixtures" [
        test "torch.save zip format (torch 1.13)" {
            use cp = TorchCheckpoint.Open(fixture [ "zip"; "pytorch_model.bin" ])
            check cp
        }
        test "torch.save legacy format (_use_new_zipfile_serialization=False)" {
            use cp = TorchCheckpoint.Open(fixture [ "legacy"; "pytorch_model.bin" ])
            check cp
        }
        test "a sharded pytorch_model.bin.index.json" {
            use cp = TorchCheckpoint.Open(fixture [ "sharded" ])
            Expect.equal (cp.Tensors |> Seq.map (fun t -> t.Name) |> Set.ofSeq) (Set.ofList ([ for n, _, _, _ in expected -> n ] @ [ "position_ids" ])) "both shards"
            for name, dtype, shape, xs in expected do
                use t = cp.Load name
                Expect.equal (t.dtype, List.ofArray t.shape, values t) (dtype, shape, xs) name
        }
        test "a PEFT adapter_model.bin: lora_A and lora_B" {
            use cp = TorchCheckpoint.Open(fixture [ "peft"; "adapter_model.bin" ])
            let prefix = "base_model.model.model.layers.0.self_attn.q_proj."
            use a = cp.Load(prefix + "lora_A.weight")
            use b = cp.Load(prefix + "lora_B.weight")
            Expect.equal (List.ofArray a.shape, values a) ([ 2L; 4L ], [ 1.0; 0.0; -1.0; 0.5; 0.25; 2.0; 0.0; -0.5 ]) "lora_A"
            Expect.equal (List.ofArray b.shape, values b) ([ 3L; 2L ], [ 1.0; -1.0; 0.0; 0.5; 2.0; 0.25 ]) "lora_B"
        }
    ]
