module MergeDsl.Tests.CheckpointTests

open System
open System.Collections.Generic
open System.IO
open System.Text.Json
open Expecto
open FsCheck
open FsCheck.FSharp
open TorchSharp
open MergeDsl.Core.Checkpoints
open MergeDsl.Bench.Demo
open MergeDsl.Tests.CheckpointFixtures

let private tensorBytes (t: torch.Tensor) = t.contiguous().bytes.ToArray()

/// Runs f, expecting an exception of type 'e, and returns it.
let private throwsMsg<'e when 'e :> exn> (f: unit -> unit) what : 'e =
    try
        f ()
        failtestf "%s: expected %s" what typeof<'e>.Name
    with
    | :? 'e as e -> e

let private writeBytes (target: string) (options: CheckpointWriterOptions) (specs: (string * DType * int64[] * byte[]) list) =
    let layout = specs |> List.map (fun (n, d, s, _) -> ValueTuple.Create(n, d, s)) |> ResizeArray
    use w = CheckpointWriter.Create(target, layout, options)
    // Written in reverse order: the plan, not the call order, fixes the layout.
    for (n, _, _, b) in List.rev specs do
        w.WriteBytes(n, ReadOnlySpan b)
    w.Commit()

type private Spec = DType * int64[] * byte[]

let private genSpec: Gen<Spec> =
    gen {
        let! dtype = Gen.elements DTypes.All
        let! rank = Gen.choose (0, 3)
        let! dims = Gen.arrayOfLength rank (Gen.choose (0, 5))
        let n = (Array.fold (*) 1 dims) * DTypes.SizeOf dtype
        let! bytes = Gen.arrayOfLength n (Gen.choose (0, 255) |> Gen.map byte)
        return dtype, Array.map int64 dims, bytes
    }

let private genCheckpoint =
    gen {
        let! k = Gen.choose (1, 6)
        let! specs = Gen.listOfLength k genSpec
        let! shardBytes = Gen.choose (1, 160)
        return specs |> List.mapi (fun i (d, s, b) -> ($"t{i}.{DTypes.ToSafetensorsName d}", d, s, b)), int64 shardBytes
    }

[<Tests>]
let tests =
    testList "Checkpoints" [
        testProperty "write/read round trip is bit-identical for every dtype, shape and byte value" <|
            Prop.forAll (Arb.fromGen genCheckpoint) (fun (specs, shardBytes) ->
                use dir = new TempDir()
                let target = dir.File "out"
                writeBytes target (CheckpointWriterOptions(MaxShardBytes = shardBytes)) specs
                use cp = Checkpoint.Open target
                Expect.equal cp.Tensors.Count specs.Length "tensor count"
                use scope = torch.NewDisposeScope()
                // Second hop through Write(tensor): what Load gives back must write the same bytes.
                let again = dir.File "again"
                use w2 = CheckpointWriter.Create(again, [ for t in cp.Tensors -> ValueTuple.Create(t.Name, t.DType, t.Shape) ] |> ResizeArray, CheckpointWriterOptions())
                for (name, dtype, shape, bytes) in specs do
                    let ok, info = cp.TryGetInfo name
                    Expect.isTrue ok name
                    Expect.equal info.DType dtype "dtype"
                    Expect.equal info.Shape shape "shape"
                    Expect.equal (cp.RawBytes(name).ToArray()) bytes "raw bytes"
                    let t = cp.Load name
                    Expect.equal t.dtype (DTypes.LoadedAs dtype) "loaded type"
                    Expect.equal t.shape shape "loaded shape"
                    Expect.equal (tensorBytes t) bytes "loaded bytes"
                    w2.Write(name, t)
                w2.Commit()
                use cp2 = Checkpoint.Open again
                for (name, _, _, bytes) in specs do
                    Expect.equal (cp2.RawBytes(name).ToArray()) bytes "bytes after Load -> Write")

        test "a hand-built file reads back the values the spec says" {
            use dir = new TempDir()
            let f = dir.File "golden.safetensors"
            let data =
                Array.concat [
                    BitConverter.GetBytes 1.0f; BitConverter.GetBytes -2.5f          // F32 [2]
                    BitConverter.GetBytes 42L                                        // I64 scalar
                    [| 0x80uy; 0x3Fuy |]                                             // BF16 1.0
                    [| 1uy; 0uy; 1uy |]                                              // BOOL [3]
                    [| 0x38uy; 0xC0uy |] ]                                           // F8_E4M3 [2]: 1.0, -2.0
            let header =
                """{"__metadata__":{"source":"hand"},"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"""
                + """"n":{"dtype":"I64","shape":[],"data_offsets":[8,16]},"h":{"dtype":"BF16","shape":[1],"data_offsets":[16,18]},"""
                + """"b":{"dtype":"BOOL","shape":[3],"data_offsets":[18,21]},"f8":{"dtype":"F8_E4M3","shape":[2],"data_offsets":[21,23]}}"""
            writeSafetensors f header data
            use cp = Checkpoint.Open f
            use _ = torch.NewDisposeScope()
            Expect.equal (cp.Load("w").data<float32>().ToArray()) [| 1.0f; -2.5f |] "F32"
            Expect.equal (cp.Load("n").item<int64> ()) 42L "I64 scalar"
            Expect.equal (cp.Load("h").to_type(torch.ScalarType.Float32).item<float32> ()) 1.0f "BF16"
            Expect.equal (cp.Load("b").data<bool>().ToArray()) [| true; false; true |] "BOOL"
            let f8 = cp.Load "f8"
            Expect.equal f8.dtype torch.ScalarType.Byte "F8 loads as raw bytes"
            Expect.equal (f8.data<byte>().ToArray()) [| 0x38uy; 0xC0uy |] "F8 bytes"
            Expect.equal (Map.ofSeq (cp.Metadata |> Seq.map (fun kv -> kv.Key, kv.Value))) (Map [ "source", "hand" ]) "metadata"
            Expect.equal [ for t in cp.Tensors -> t.Name ] [ "w"; "n"; "h"; "b"; "f8" ] "file order"
            Expect.isNull cp.Folder "a bare file has no model folder"
        }

        test "zero-copy views outlive the checkpoint and in-place ops never reach the file" {
            use dir = new TempDir()
            let f = dir.File "m.safetensors"
            let values = Array.init 1024 float32
            writeSafetensors f """{"x":{"dtype":"F32","shape":[1024],"data_offsets":[0,4096]}}    """
                (values |> Array.collect (fun (x: float32) -> BitConverter.GetBytes x))
            let before = File.ReadAllBytes f
            use _ = torch.NewDisposeScope()
            let cp = Checkpoint.Open f
            let t = cp.Load "x"
            Expect.equal (NativeTensors.DataPointer t) (cp.Address "x") "the tensor views the mapped bytes (no copy)"
            cp.Dispose()
            Expect.equal (t.sum().item<float32> ()) (Array.sum values) "readable after the checkpoint is disposed"
            t.add_(torch.tensor 1.0f) |> ignore
            Expect.equal (t.[0L].item<float32> ()) 1.0f "the private copy changed"
            t.Dispose()
            Expect.equal (File.ReadAllBytes f) before "the file did not"
            use cp2 = Checkpoint.Open(f, zeroCopy = false)
            let c = cp2.Load "x"
            Expect.notEqual (NativeTensors.DataPointer c) (cp2.Address "x") "copy mode copies"
            Expect.equal (c.data<float32>().ToArray()) values "copy mode values"
        }

        test "each view holds the mapping until disposed; the last release unmaps" {
            use dir = new TempDir()
            let f = dir.File "m.safetensors"
            writeSafetensors f """{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"I64","shape":[1],"data_offsets":[8,16]}}    """ (Array.zeroCreate 16)
            let cp = Checkpoint.Open f
            Expect.equal cp.MappingReferences 1 "the checkpoint's own"
            let a = cp.Load "a"
            let a2 = cp.Load "a"
            let b = cp.Load "b"
            Expect.equal cp.MappingReferences 4 "one per view (the same tensor twice counts twice)"
            a.Dispose()
            Expect.equal cp.MappingReferences 3 "a view released"
            cp.Dispose()
            Expect.equal cp.MappingReferences 2 "the checkpoint released, two views keep the mapping"
            Expect.equal (b.item<int64> ()) 0L "still readable"
            a2.Dispose()
            b.Dispose()
            Expect.equal cp.MappingReferences 0 "unmapped"
        }

        test "misaligned data falls back to a copy" {
            use dir = new TempDir()
            let f = dir.File "odd.safetensors"
            // Header of 13 bytes puts the data area at offset 21: F32 data there is misaligned.
            let header = """{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"x":{"dtype":"F32","shape":[2],"data_offsets":[1,9]}}"""
            writeSafetensors f header (Array.append [| 7uy |] (Array.collect (fun (x: float32) -> BitConverter.GetBytes x) [| 3.0f; 4.0f |]))
            use cp = Checkpoint.Open f
            use _ = torch.NewDisposeScope()
            Expect.equal (cp.Load("x").data<float32>().ToArray()) [| 3.0f; 4.0f |] "values"
        }

        test "sharded round trip writes the HF index and every shard" {
            use dir = new TempDir()
            let target = dir.File "sharded"
            use _ = torch.NewDisposeScope()
            let tensors = Dictionary<string, torch.Tensor>()
            for i in 0..9 do
                tensors[$"layers.{i}.weight"] <- torch.tensor(Array.init (100 + i) float32)
            tensors["bias.bf16"] <- torch.ones([| 3L |], dtype = torch.ScalarType.BFloat16)
            CheckpointWriter.WriteAll(target, tensors, CheckpointWriterOptions(MaxShardBytes = ByteSize.Parse "1KB", Metadata = readOnlyDict [ "recipe", "x + y" ]))
            let shardFiles = Directory.GetFiles(target, "*.safetensors") |> Array.map Path.GetFileName |> Array.sort
            Expect.isGreaterThan shardFiles.Length 2 "several shards"
            Expect.equal shardFiles.[0] $"model-00001-of-{shardFiles.Length:D5}.safetensors" "HF shard names"
            for f in Directory.GetFiles(target, "*.safetensors") do
                Expect.isLessThanOrEqual (FileInfo(f).Length) 1400L "shards stay near the limit (header aside)"
            use index = JsonDocument.Parse(File.ReadAllText(Path.Combine(target, "model.safetensors.index.json")))
            let total = index.RootElement.GetProperty("metadata").GetProperty("total_size").GetInt64()
            Expect.equal total (tensors.Values |> Seq.sumBy (fun t -> t.NumberOfElements * t.ElementSize)) "total_size"
            let map = index.RootElement.GetProperty("weight_map").EnumerateObject() |> Seq.map (fun p -> p.Name, p.Value.GetString()) |> Map.ofSeq
            Expect.equal (Set.ofSeq map.Keys) (Set.ofSeq tensors.Keys) "weight_map names every tensor"
            Expect.equal (Set.ofSeq map.Values) (Set.ofArray shardFiles) "and every shard"
            use cp = Checkpoint.Open target
            Expect.equal cp.IndexFile (Some(Path.Combine(target, "model.safetensors.index.json")) |> Option.toObj) "opened through the index"
            for KeyValue(name, t) in tensors do
                let ok, info = cp.TryGetInfo name
                Expect.isTrue ok name
                Expect.equal (Path.GetFileName info.File) map[name] "tensor in the shard the index names"
                Expect.equal (tensorBytes (cp.Load name)) (tensorBytes t) name
            Expect.equal cp.Metadata["recipe"] "x + y" "metadata in every shard"
            Expect.equal cp.Metadata["format"] "pt" "format added for transformers"
            use viaIndexFile = Checkpoint.Open(Path.Combine(target, "model.safetensors.index.json"))
            Expect.equal viaIndexFile.Tensors.Count tensors.Count "the index file itself opens too"
        }

        test "writes from many threads in random order" {
            use dir = new TempDir()
            let target = dir.File "par"
            let specs = [ for i in 0..63 -> ($"p{i}", DType.F32, [| 16L; int64 (i % 5) |], Array.init (16 * (i % 5) * 4) (fun k -> byte (k * 7 + i))) ]
            let layout = specs |> List.map (fun (n, d, s, _) -> ValueTuple.Create(n, d, s)) |> ResizeArray
            do
                use w = CheckpointWriter.Create(target, layout, CheckpointWriterOptions(MaxShardBytes = 2000L))
                specs |> List.sortBy (fun (n, _, _, _) -> n.GetHashCode()) |> Array.ofList
                |> Array.Parallel.iter (fun (n, _, _, b) -> w.WriteBytes(n, ReadOnlySpan b))
                w.Commit()
            use cp = Checkpoint.Open target
            for (n, _, _, b) in specs do
                Expect.equal (cp.RawBytes(n).ToArray()) b n
        }

        test "Dispose without Commit leaves neither target nor temporary folder" {
            use dir = new TempDir()
            let target = dir.File "model"
            do
                use w = CheckpointWriter.Create(target, ResizeArray [ ValueTuple.Create("a", DType.F32, [| 2L |]) ], CheckpointWriterOptions())
                Expect.isTrue (Directory.Exists w.TemporaryFolder) "writing into a temporary folder"
                w.WriteBytes("a", ReadOnlySpan(Array.zeroCreate<byte> 8))
            Expect.isFalse (Directory.Exists target) "no target"
            Expect.isEmpty (leftoversBeside target) "no temporary folder"
        }

        test "an exception mid-way (bad tensor, then unwritten tensors at Commit) leaves nothing behind" {
            use dir = new TempDir()
            let target = dir.File "model"
            use _ = torch.NewDisposeScope()
            let layout = ResizeArray [ ValueTuple.Create("a", DType.F32, [| 2L |]); ValueTuple.Create("b", DType.F16, [| 3L |]) ]
            let attempt () =
                use w = CheckpointWriter.Create(target, layout, CheckpointWriterOptions())
                w.Write("a", torch.ones([| 2L |]))
                w.Write("b", torch.ones([| 4L |])) // wrong shape: throws, the `use` disposes the writer
                w.Commit()
            let e = throwsMsg<ArgumentException> attempt "shape mismatch"
            Expect.stringContains e.Message "differs from the planned [3]" "names the shape"
            Expect.isFalse (Directory.Exists target) "no target after a failed Write"
            Expect.isEmpty (leftoversBeside target) "no temporary folder after a failed Write"
            let incomplete () =
                use w = CheckpointWriter.Create(target, layout, CheckpointWriterOptions())
                w.Write("a", torch.ones([| 2L |]))
                w.Commit()
            let e2 = throwsMsg<InvalidOperationException> incomplete "Commit with a tensor missing"
            Expect.stringContains e2.Message "1 tensor(s) never written: b" "names the missing tensor"
            Expect.isFalse (Directory.Exists target) "no target after a refused Commit"
            Expect.isEmpty (leftoversBeside target) "no temporary folder after a refused Commit"
        }

        test "an existing target is refused unless overwriting, and a mergedsl output is replaced whole when overwriting" {
            use dir = new TempDir()
            use _ = torch.NewDisposeScope()
            let target = dir.File "model"
            let one = readOnlyDict [ "a", torch.ones([| 2L |]) ]
            CheckpointWriter.WriteAll(target, readOnlyDict [ "old", torch.ones([| 3L |]) ], CheckpointWriterOptions())
            File.WriteAllText(Path.Combine(target, "keep.txt"), "old")
            Expect.throwsT<OutputRefusedException> (fun () -> CheckpointWriter.WriteAll(target, one, CheckpointWriterOptions())) "exists"
            Expect.equal (File.ReadAllText(Path.Combine(target, "keep.txt"))) "old" "untouched"
            CheckpointWriter.WriteAll(target, one, CheckpointWriterOptions(Overwrite = true))
            Expect.isFalse (File.Exists(Path.Combine(target, "keep.txt"))) "old content gone"
            use cp = Checkpoint.Open target
            Expect.equal cp.Tensors.Count 1 "new content"
            Expect.isEmpty (leftoversBeside target) "no temporary or old folder left"
        }

        test "config, tokenizer and other small files are copied through; weights and the old index are not" {
            use dir = new TempDir()
            let src = dir.File "src"
            Directory.CreateDirectory src |> ignore
            let copied = [ "config.json"; "generation_config.json"; "tokenizer.json"; "tokenizer_config.json"; "tokenizer.model"; "special_tokens_map.json"; "vocab.txt"; "merges.txt"; "preprocessor_config.json" ]
            let skipped = [ "model.safetensors"; "pytorch_model.bin"; "model.safetensors.index.json"; "pytorch_model.bin.index.json"; "README.md"; ".gitattributes"; "weights.pt"; "flax_model.msgpack" ]
            for f in copied @ skipped do File.WriteAllText(Path.Combine(src, f), "content of " + f)
            let target = dir.File "out"
            use _ = torch.NewDisposeScope()
            CheckpointWriter.WriteAll(target, readOnlyDict [ "w", torch.zeros([| 4L |]) ], CheckpointWriterOptions(CopyFilesFrom = src))
            for f in copied do
                Expect.equal (File.ReadAllText(Path.Combine(target, f))) ("content of " + f) f
            let present = Directory.GetFiles target |> Array.map Path.GetFileName |> Set.ofArray
            Expect.equal present (Set.ofList (OutputMarkers.Finished :: "model.safetensors" :: copied)) "exactly the small files plus the new weights (and the output marker)"
            use cp = Checkpoint.Open target
            Expect.equal cp.Folder target "HF folder"
            Expect.equal cp.Tensors.Count 1 "the new weights, not the copied junk"
        }

        test "F8 tensors write from raw bytes and refuse other types" {
            use dir = new TempDir()
            use _ = torch.NewDisposeScope()
            let target = dir.File "f8"
            let layout = ResizeArray [ ValueTuple.Create("e4", DType.F8E4M3, [| 2L; 2L |]); ValueTuple.Create("e5", DType.F8E5M2, [| 3L |]) ]
            do
                use w = CheckpointWriter.Create(target, layout, CheckpointWriterOptions())
                Expect.throwsT<ArgumentException> (fun () -> w.Write("e4", torch.ones([| 2L; 2L |]))) "float into F8"
                w.Write("e4", torch.tensor([| 0x38uy; 0xC0uy; 0x7Fuy; 0x00uy |]).reshape([| 2L; 2L |]))
                w.Write("e5", torch.tensor([| 0x3Cuy; 0xFFuy; 0x01uy |]))
                w.Commit()
            use cp = Checkpoint.Open target
            Expect.equal (cp.RawBytes("e4").ToArray()) [| 0x38uy; 0xC0uy; 0x7Fuy; 0x00uy |] "E4M3 bytes"
            Expect.equal (cp.RawBytes("e5").ToArray()) [| 0x3Cuy; 0xFFuy; 0x01uy |] "E5M2 bytes"
            Expect.throwsT<NotSupportedException> (fun () -> DTypes.ToTorch DType.F8E4M3 |> ignore) "no torch Float8 in 0.107"
        }

        test "Write converts dtype and takes non-contiguous input" {
            use dir = new TempDir()
            use _ = torch.NewDisposeScope()
            let target = dir.File "conv"
            let x = torch.arange(6L, dtype = torch.ScalarType.Float32).reshape([| 2L; 3L |]).t()
            do
                use w = CheckpointWriter.Create(target, ResizeArray [ ValueTuple.Create("x", DType.F16, [| 3L; 2L |]) ], CheckpointWriterOptions())
                w.Write("x", x)
                w.Commit()
            use cp = Checkpoint.Open target
            let y = cp.Load "x"
            Expect.equal y.dtype torch.ScalarType.Float16 "stored as F16"
            Expect.equal (y.to_type(torch.ScalarType.Float32).data<float32>().ToArray()) [| 0.f; 3.f; 1.f; 4.f; 2.f; 5.f |] "transposed values"
        }

        test "ByteSize parses decimal and binary units and formats decimally" {
            Expect.equal (ByteSize.Parse "5GB") 5_000_000_000L "5GB"
            Expect.equal (ByteSize.Parse "500MB") 500_000_000L "500MB"
            Expect.equal (ByteSize.Parse "2GiB") 2_147_483_648L "2GiB"
            Expect.equal (ByteSize.Parse "1048576") 1_048_576L "plain"
            Expect.equal (ByteSize.Parse "1.5 kb") 1500L "fraction, space, lower case"
            Expect.throwsT<ArgumentException> (fun () -> ByteSize.Parse "5XB" |> ignore) "unknown unit"
            Expect.throwsT<ArgumentException> (fun () -> ByteSize.Parse "-1MB" |> ignore) "negative"
            Expect.equal (ByteSize.Format 5_000_000_000L) "5 GB" "format GB"
            Expect.equal (ByteSize.Format 79_360L) "79.36 KB" "format KB"
            Expect.equal (ByteSize.Format 512L) "512 B" "format B"
        }

        test "InMemorySource serves aliases by name, sorted, and names itself on a miss" {
            use _ = torch.NewDisposeScope()
            let w = torch.tensor([| 1.0f; 2.0f |])
            use src = new InMemorySource("mem", readOnlyDict [ "z", torch.zeros([| 1L |], dtype = torch.ScalarType.Int64); "w", w ])
            Expect.equal [ for t in src.Tensors -> t.Name ] [ "w"; "z" ] "sorted by name"
            let ok, info = src.TryGetInfo "z"
            Expect.isTrue ok "found"
            Expect.equal (info.DType, info.Shape, info.ByteLength) (DType.I64, [| 1L |], 8L) "info"
            let a = src.Load "w"
            a.Dispose()
            Expect.isFalse w.IsInvalid "disposing the loaded alias leaves the source's tensor alive"
            let e = throwsMsg<KeyNotFoundException> (fun () -> src.Load "nope" |> ignore) "miss"
            Expect.equal e.Message "mem: no tensor named 'nope'" "message"
            use dir = new TempDir()
            CheckpointWriter.WriteAll(dir.File "m", readOnlyDict [ "w", w ], CheckpointWriterOptions())
            use cp = Checkpoint.Open(dir.File "m")
            let e2 = throwsMsg<KeyNotFoundException> (fun () -> cp.Load "nope" |> ignore) "checkpoint miss"
            Expect.equal e2.Message $"""{dir.File "m"}: no tensor named 'nope'""" "checkpoint message"
        }

        test "dtype names round-trip and sizes match the spec" {
            for d in DTypes.All do
                Expect.equal (DTypes.ParseSafetensorsName(DTypes.ToSafetensorsName d)) d (string d)
            Expect.equal [ for d in DTypes.All -> DTypes.SizeOf d ] [ 8; 4; 2; 2; 8; 4; 2; 1; 1; 1; 1; 1 ] "sizes"
            Expect.equal (DTypes.ToSafetensorsName DType.F8E5M2) "F8_E5M2" "F8 name"
            Expect.throwsT<ArgumentException> (fun () -> DTypes.ParseSafetensorsName "f32" |> ignore) "case-sensitive"
        }

        test "the demo zoo is deterministic, reused when identical, and experts sit near the base" {
            use dir = new TempDir()
            let first = DemoZoo.Build(dir.File "a")
            let again = DemoZoo.Build(dir.File "a")
            let other = DemoZoo.Build(dir.File "b")
            Expect.isTrue (first |> Seq.forall (fun m -> not m.Reused)) "first build writes"
            Expect.isTrue (again |> Seq.forall (fun m -> m.Reused)) "second build reuses"
            let resharded = DemoZoo.Build(dir.File "a", DemoZooConfig(), 20_000L)
            Expect.equal [ for m in resharded -> m.Reused ] [ true; true; true; false ] "another shard size rewrites only the sharded expert"
            Expect.equal [ for m in first -> m.Name ] [ "base"; "expert_1"; "expert_2"; "expert_3" ] "names"
            Expect.isTrue (first |> Seq.last).Sharded "last expert sharded"
            for m in 0..3 do
                let read (f: string) = File.ReadAllBytes(Path.Combine(f, "config.json"))
                Expect.equal (read other[m].Folder) (read first[m].Folder) "config.json"
            use b = Checkpoint.Open(first[0].Folder)
            use b2 = Checkpoint.Open(other[0].Folder)
            use e = Checkpoint.Open(first[3].Folder)
            Expect.isGreaterThan e.Shards.Count 1 "sharded on disk"
            use _ = torch.NewDisposeScope()
            for t in b.Tensors do
                Expect.equal (b.RawBytes(t.Name).ToArray()) (b2.RawBytes(t.Name).ToArray()) "same bytes every build"
                let d = (e.Load(t.Name) - b.Load(t.Name)).abs().max().item<float32> ()
                Expect.isGreaterThan d 0.0f t.Name
                Expect.isLessThan d 0.1f t.Name
            Expect.isTrue (b.TryGetInfo("vision_model.encoder.layers.1.mlp.fc1.weight") |> fst) "CLIP names"
        }
    ]
