/// PyTorch checkpoints read by the restricted unpickler: torch.save files written byte by byte (zip format of
/// torch ≥ 1.6 and the legacy format, protocol-2 opcodes as torch.save emits them), tensors round-tripping with
/// strides, offsets and shared storages; pickles that would run code refused with the global named; convert.
module MergeDsl.Tests.PickleTests

open System
open System.IO
open System.IO.Compression
open System.Text
open Expecto
open TorchSharp
open MergeDsl.Core.Checkpoints
open MergeDsl.Tests.CheckpointFixtures
open MergeDsl.Tests.CliHarness

/// Protocol-2 pickle opcodes, as CPython's pickler writes them.
module Pk =
    let proto = [| 0x80uy; 2uy |]
    let stop = [| byte '.' |]
    let mark = [| byte '(' |]
    let tuple = [| byte 't' |]
    let emptyTuple = [| byte ')' |]
    let reduce = [| byte 'R' |]
    let setitems = [| byte 'u' |]
    let binpersid = [| byte 'Q' |]
    let newFalse = [| 0x89uy |]
    let none = [| byte 'N' |]
    let global' (m: string) (n: string) = Encoding.ASCII.GetBytes $"c{m}\n{n}\n"
    let str (s: string) =
        let b = Encoding.UTF8.GetBytes s
        Array.concat [ [| byte 'X' |]; BitConverter.GetBytes(uint32 b.Length); b ]
    let int (v: int64) =
        if v >= 0L && v < 256L then [| byte 'K'; byte v |]
        else Array.concat [ [| byte 'J' |]; BitConverter.GetBytes(int32 v) ]
    let ints (xs: int64 list) = Array.concat ([ mark ] @ (xs |> List.map int) @ [ tuple ])
    let binput (i: int) = [| byte 'q'; byte i |]
    let binget (i: int) = [| byte 'h'; byte i |]
    let orderedDict = Array.concat [ global' "collections" "OrderedDict"; emptyTuple; reduce ]

/// A tensor entry of a state dict: a strided view of a storage.
type private Entry = { Name: string; Key: string; Storage: string; Numel: int64; Offset: int64; Size: int64 list; Stride: int64 list }

/// The main pickle of a state dict, as torch.save writes it: an OrderedDict of `_rebuild_tensor_v2(...)` calls
/// whose storage is a persistent id ('storage', torch.XStorage, key, 'cpu', numel[, view]).
let private statePickle (legacy: bool) (entries: Entry list) =
    let tensor (e: Entry) =
        Array.concat [
            Pk.str e.Name
            Pk.global' "torch._utils" "_rebuild_tensor_v2"
            Pk.mark
            Pk.mark; Pk.str "storage"; Pk.global' "torch" e.Storage; Pk.str e.Key; Pk.str "cpu"; Pk.int e.Numel
            (if legacy then Pk.none else [||]); Pk.tuple; Pk.binpersid
            Pk.int e.Offset; Pk.ints e.Size; Pk.ints e.Stride; Pk.newFalse; Pk.orderedDict
            Pk.tuple; Pk.reduce ]
    Array.concat ([ Pk.proto; Pk.orderedDict; Pk.binput 0; Pk.mark ] @ (entries |> List.map tensor) @ [ Pk.setitems; Pk.stop ])

/// A torch.save zip archive: archive/data.pkl, archive/data/<key>, archive/version, archive/byteorder.
let private writeZip (path: string) (pickle: byte[]) (storages: (string * byte[]) list) =
    use fs = File.Create path
    use zip = new ZipArchive(fs, ZipArchiveMode.Create)
    let add (name: string) (bytes: byte[]) =
        let e = zip.CreateEntry(name, CompressionLevel.NoCompression)
        use s = e.Open()
        s.Write(bytes, 0, bytes.Length)
    add "archive/data.pkl" pickle
    add "archive/byteorder" (Encoding.ASCII.GetBytes "little")
    for key, bytes in storages do add $"archive/data/{key}" bytes
    add "archive/version" (Encoding.ASCII.GetBytes "3\n")

/// The legacy (pre-1.6) format: magic, protocol 1001, sys_info, the main pickle, the sorted keys, then each
/// storage as an int64 element count and its bytes.
let private writeLegacy (path: string) (entries: Entry list) (storages: (string * int * byte[]) list) =
    let magic = Array.concat [ Pk.proto; [| 0x8auy; 10uy |]; (Numerics.BigInteger.Parse "119547037146038801333356").ToByteArray(); Pk.stop ]
    let protocol = Array.concat [ Pk.proto; [| byte 'M'; 0xe9uy; 0x03uy |]; Pk.stop ]
    let sysInfo = Array.concat [ Pk.proto; [| byte '}' |]; Pk.mark; Pk.str "protocol_version"; [| byte 'M'; 0xe9uy; 0x03uy |]; Pk.str "little_endian"; [| 0x88uy |]; Pk.setitems; Pk.stop ]
    let keys = storages |> List.map (fun (k, _, _) -> k) |> List.sort
    let keyList = Array.concat ([ Pk.proto; [| byte ']' |]; Pk.mark ] @ (keys |> List.map Pk.str) @ [ [| byte 'e' |]; Pk.stop ])
    let data =
        [ for k in keys do
            let _, numel, bytes = storages |> List.find (fun (k2, _, _) -> k2 = k)
            yield BitConverter.GetBytes(int64 numel)
            yield bytes ]
    File.WriteAllBytes(path, Array.concat ([ magic; protocol; sysInfo; statePickle true entries; keyList ] @ data))

let private f32Bytes (xs: float32 list) = xs |> List.map BitConverter.GetBytes |> Array.concat
let private u16Bytes (xs: uint16 list) = xs |> List.map BitConverter.GetBytes |> Array.concat
let private i64Bytes (xs: int64 list) = xs |> List.map BitConverter.GetBytes |> Array.concat

/// Storage 0: floats 0..11. Storage 1: f16 [1, 0.5, -2]. Storage 2: bf16 [1, 2, -1.5]. Storage 3: int64 [7, -8, 9].
let private storages =
    [ "0", 12, f32Bytes [ for i in 0 .. 11 -> float32 i ]
      "1", 3, u16Bytes [ 0x3C00us; 0x3800us; 0xC000us ]
      "2", 3, u16Bytes [ 0x3F80us; 0x4000us; 0xBFC0us ]
      "3", 3, i64Bytes [ 7L; -8L; 9L ] ]

let private entries =
    [ { Name = "plain"; Key = "0"; Storage = "FloatStorage"; Numel = 12L; Offset = 0L; Size = [ 2L; 3L ]; Stride = [ 3L; 1L ] }
      // A transposed view: size (3, 2), stride (1, 3) → [[0, 3], [1, 4], [2, 5]].
      { Name = "transposed"; Key = "0"; Storage = "FloatStorage"; Numel = 12L; Offset = 0L; Size = [ 3L; 2L ]; Stride = [ 1L; 3L ] }
      // Offset 7, every second element: [7, 9, 11]; shares storage 0 with the two above.
      { Name = "offset.strided"; Key = "0"; Storage = "FloatStorage"; Numel = 12L; Offset = 7L; Size = [ 3L ]; Stride = [ 2L ] }
      { Name = "half"; Key = "1"; Storage = "HalfStorage"; Numel = 3L; Offset = 0L; Size = [ 3L ]; Stride = [ 1L ] }
      { Name = "bf16"; Key = "2"; Storage = "BFloat16Storage"; Numel = 3L; Offset = 0L; Size = [ 3L ]; Stride = [ 1L ] }
      { Name = "long"; Key = "3"; Storage = "LongStorage"; Numel = 3L; Offset = 0L; Size = [ 3L ]; Stride = [ 1L ] }
      // A 0-d tensor (a scalar): size (), stride ().
      { Name = "scalar"; Key = "0"; Storage = "FloatStorage"; Numel = 12L; Offset = 5L; Size = []; Stride = [] } ]

let private asFloats (t: torch.Tensor) = t.to_type(torch.float64).flatten().data<float>().ToArray() |> Array.toList

let private checkTensors (src: ITensorSource) =
    let get name = src.Load name
    use plain = get "plain"
    Expect.equal (plain.shape |> List.ofArray) [ 2L; 3L ] "shape"
    Expect.equal (asFloats plain) [ 0.0; 1.0; 2.0; 3.0; 4.0; 5.0 ] "f32 values"
    use tr = get "transposed"
    Expect.equal (tr.shape |> List.ofArray) [ 3L; 2L ] "shape"
    Expect.equal (asFloats tr) [ 0.0; 3.0; 1.0; 4.0; 2.0; 5.0 ] "strided view, made contiguous"
    use os = get "offset.strided"
    Expect.equal (asFloats os) [ 7.0; 9.0; 11.0 ] "storage offset and stride"
    use h = get "half"
    Expect.equal h.dtype torch.float16 "f16"
    Expect.equal (asFloats h) [ 1.0; 0.5; -2.0 ] "f16 values"
    use b = get "bf16"
    Expect.equal b.dtype torch.bfloat16 "bf16"
    Expect.equal (asFloats b) [ 1.0; 2.0; -1.5 ] "bf16 values"
    use l = get "long"
    Expect.equal l.dtype torch.int64 "i64"
    Expect.equal (l.data<int64>().ToArray() |> List.ofArray) [ 7L; -8L; 9L ] "i64 values"
    use s = get "scalar"
    Expect.equal s.shape [||] "0-d"
    Expect.equal (s.item<float32>()) 5.0f "scalar value"

let private zipStorages = storages |> List.map (fun (k, _, b) -> k, b)

/// A zip whose data.pkl is `pickle` (no storages).
let private hostile (dir: TempDir) (name: string) (pickle: byte[]) =
    let path = dir.File name
    writeZip path pickle []
    path

let private refusedWith (path: string) (parts: string list) =
    try
        use _ = TorchCheckpoint.Open path
        failtest "a hostile pickle was accepted"
    with :? CheckpointFormatException as e ->
        Expect.isFalse (e.Message.Contains '\n') "one line"
        for p in parts do Expect.stringContains e.Message p "names it"

[<Tests>]
let tests =
    testSequenced <| testList "PyTorch checkpoints" [
        test "zip format (torch >= 1.6): f32, f16, bf16, i64, strides, offsets, shared storage, 0-d" {
            use dir = new TempDir()
            let path = dir.File "pytorch_model.bin"
            writeZip path (statePickle false entries) zipStorages
            use cp = TorchCheckpoint.Open path
            Expect.equal [ for t in cp.Tensors -> t.Name ] [ for e in entries -> e.Name ] "file order"
            checkTensors cp
        }
        test "legacy format (torch < 1.6)" {
            use dir = new TempDir()
            let path = dir.File "model.pt"
            writeLegacy path entries storages
            use cp = TorchCheckpoint.Open path
            checkTensors cp
        }
        test "globals that would run code are refused, naming them; nothing runs" {
            use dir = new TempDir()
            let marker = dir.File "pwned"
            let cmd = $"touch {marker}"
            // GLOBAL 'posix system' + REDUCE: what `os.system` pickles to.
            let system = Array.concat [ Pk.proto; Pk.global' "posix" "system"; Pk.str cmd; [| 0x85uy |]; Pk.reduce; Pk.stop ]
            refusedWith (hostile dir "a.bin" system) [ "'posix.system'"; "not allowed" ]
            let eval = Array.concat [ Pk.proto; Pk.global' "builtins" "eval"; Pk.str "__import__('os').system('x')"; [| 0x85uy |]; Pk.reduce; Pk.stop ]
            refusedWith (hostile dir "b.bin" eval) [ "'builtins.eval'" ]
            // Protocol 4's STACK_GLOBAL, and protocol 0's INST.
            let stackGlobal = Array.concat [ [| 0x80uy; 4uy; 0x8cuy; 8uy |]; Encoding.ASCII.GetBytes "builtins"; [| 0x8cuy; 4uy |]; Encoding.ASCII.GetBytes "exec"; [| 0x93uy |]; Pk.stop ]
            refusedWith (hostile dir "c.bin" stackGlobal) [ "'builtins.exec'" ]
            let inst = Array.concat [ Pk.mark; Encoding.ASCII.GetBytes $"S'{cmd}'\nios\nsystem\n"; Pk.stop ]
            refusedWith (hostile dir "d.bin" inst) [ "'os.system'" ]
            // A tensor-rebuilding pickle that smuggles a call among its values.
            let mixed = Array.concat [ Pk.proto; Pk.orderedDict; Pk.mark; Pk.str "x"; Pk.global' "subprocess" "Popen"; Pk.setitems; Pk.stop ]
            refusedWith (hostile dir "e.bin" mixed) [ "'subprocess.Popen'" ]
            Expect.isFalse (File.Exists marker) "no command ran"
        }
        test "malformed pickles and views outside their storage are one line" {
            use dir = new TempDir()
            refusedWith (hostile dir "a.bin" (Array.concat [ Pk.proto; Pk.mark ])) [ "ended before its STOP" ]
            refusedWith (hostile dir "b.bin" (Array.concat [ Pk.proto; [| 0x82uy; 1uy |]; Pk.stop ])) [ "opcode 0x82" ]
            refusedWith (hostile dir "c.bin" (Array.concat [ Pk.proto; Pk.reduce; Pk.stop ])) [ "stack underflow" ]
            let outside = [ { entries[0] with Size = [ 4L; 4L ] } ]
            let path = dir.File "d.bin"
            writeZip path (statePickle false outside) zipStorages
            refusedWith path [ "reaches element 12 of a storage of 12" ]
            let missing = dir.File "e.bin"
            writeZip missing (statePickle false [ entries[0] ]) []
            refusedWith missing [ "no entry data/0" ]
            let notTorch = dir.File "f.bin"
            File.WriteAllBytes(notTorch, Encoding.ASCII.GetBytes "hello")
            refusedWith notTorch [ "not a PyTorch checkpoint" ]
        }
        test "mergedsl convert: safetensors (sharded when asked), config and tokenizer copied, tensors equal" {
            use dir = new TempDir()
            let model = dir.File "model"
            Directory.CreateDirectory model |> ignore
            writeZip (Path.Combine(model, "pytorch_model.bin")) (statePickle false entries) zipStorages
            File.WriteAllText(Path.Combine(model, "config.json"), """{"model_type": "llama"}""")
            File.WriteAllText(Path.Combine(model, "tokenizer.json"), "{}")
            let out = dir.File "out"
            let code, stdout, err = mergedsl [ "convert"; model; "--out"; out; "--shard-size"; "64" ]
            Expect.equal code 0 err
            Expect.stringContains stdout "converted 7 tensors" "summary"
            for f in [ "config.json"; "tokenizer.json"; Checkpoint.IndexFileName ] do
                Expect.isTrue (File.Exists(Path.Combine(out, f))) $"{f} written"
            Expect.isFalse (File.Exists(Path.Combine(out, "pytorch_model.bin"))) "the pickle is not copied"
            use cp = Checkpoint.Open out
            checkTensors cp
        }
        test "convert refuses a hostile pickle (exit 1, one line, nothing written); merges point to convert" {
            use dir = new TempDir()
            let model = dir.File "model"
            Directory.CreateDirectory model |> ignore
            writeZip (Path.Combine(model, "pytorch_model.bin")) (Array.concat [ Pk.proto; Pk.global' "posix" "system"; Pk.str "true"; [| 0x85uy |]; Pk.reduce; Pk.stop ]) []
            let out = dir.File "out"
            let code, _, err = mergedsl [ "convert"; model; "--out"; out ]
            Expect.equal code 1 "runtime failure"
            Expect.equal (err.Trim().Split('\n').Length) 1 "one line"
            Expect.stringContains err "'posix.system', which is not allowed" "names the global"
            Expect.isFalse (Directory.Exists out) "nothing written"
            Expect.isEmpty (leftoversBeside out) "no temporary folder"
            let code, _, err = mergedsl [ "run"; "average"; "--model"; model; "--out"; dir.File "merged" ]
            Expect.notEqual code 0 "refused"
            Expect.stringContains err "convert them first with `mergedsl convert" "the hint"
        }
        test "a sharded pytorch_model.bin.index.json converts" {
            use dir = new TempDir()
            let model = dir.File "model"
            Directory.CreateDirectory model |> ignore
            writeZip (Path.Combine(model, "pytorch_model-00001-of-00002.bin")) (statePickle false [ entries[0]; entries[1] ]) [ "0", f32Bytes [ for i in 0 .. 11 -> float32 i ] ]
            let (_, _, b3) = storages[3]
            writeZip (Path.Combine(model, "pytorch_model-00002-of-00002.bin")) (statePickle false [ entries[5] ]) [ "3", b3 ]
            File.WriteAllText(Path.Combine(model, TorchCheckpoint.IndexFileName),
                """{"metadata": {}, "weight_map": {"plain": "pytorch_model-00001-of-00002.bin", "transposed": "pytorch_model-00001-of-00002.bin", "long": "pytorch_model-00002-of-00002.bin"}}""")
            let out = dir.File "out"
            let code, _, err = mergedsl [ "convert"; model; "--out"; out; "--json" ]
            Expect.equal code 0 err
            use cp = Checkpoint.Open out
            Expect.equal (cp.Tensors |> Seq.map (fun t -> t.Name) |> Set.ofSeq) (Set.ofList [ "plain"; "transposed"; "long" ]) "all shards"
            use l = cp.Load "long"
            Expect.equal (l.data<int64>().ToArray() |> List.ofArray) [ 7L; -8L; 9L ] "values"
        }
    ]
