/// Every way a safetensors file or index can be broken, each with its own one-line message.
module MergeDsl.Tests.CheckpointMalformedTests

open System
open System.IO
open Expecto
open MergeDsl.Core.Checkpoints
open MergeDsl.Tests.CheckpointFixtures

/// Opens `path`, expecting a CheckpointFormatException blaming `blamed` with `expected` in its message.
let private expectProblem (path: string) (blamed: string) (expected: string) =
    try
        use _ = Checkpoint.Open path
        failtestf "%s opened, expected: %s" path expected
    with
    | :? CheckpointFormatException as e ->
        Expect.equal e.File blamed "the file at fault"
        Expect.isTrue (e.Message.StartsWith(blamed + ": ")) $"message starts with the file: {e.Message}"
        Expect.stringContains e.Message expected "the specific problem"
        Expect.isFalse (e.Message.Contains '\n') "one line"

let private tensor name dtype shape (b: int64) (e: int64) =
    $"\"{name}\":{{\"dtype\":\"{dtype}\",\"shape\":{shape},\"data_offsets\":[{b},{e}]}}"

/// One file with the given header and data; the expected problem text.
let private fileCase name header (data: byte[]) expected =
    test name {
        use dir = new TempDir()
        let f = dir.File "bad.safetensors"
        writeSafetensors f header data
        expectProblem f f expected
    }

let private rawCase name (bytes: byte[]) expected =
    test name {
        use dir = new TempDir()
        let f = dir.File "bad.safetensors"
        File.WriteAllBytes(f, bytes)
        expectProblem f f expected
    }

let private z n = Array.zeroCreate<byte> n

[<Tests>]
let tests =
    testList "Checkpoint validation" [
        rawCase "an empty file" [||] "file is 0 bytes, shorter than the 8-byte header length"
        rawCase "a file shorter than 8 bytes" [| 1uy; 2uy; 3uy |] "file is 3 bytes, shorter than the 8-byte header length"
        rawCase "a header length beyond the file" (Array.append (BitConverter.GetBytes 500UL) (Text.Encoding.ASCII.GetBytes "{}"))
            "header length 500 runs past the end of the file (10 bytes)"
        rawCase "an absurd header length" (Array.append (BitConverter.GetBytes 200_000_000UL) (z 16)) "header length 200000000 is absurd (over 100 MB)"
        rawCase "a header length of 2^63" (Array.append (BitConverter.GetBytes 0x8000000000000000UL) (z 16)) "is absurd"
        fileCase "invalid JSON" """{"a": {"dtype": "F32",""" [||] "header is not valid JSON: unexpected end of input"
        fileCase "trailing garbage after the JSON" """{} x""" [||] "header is not valid JSON: unexpected text after the JSON value"
        rawCase "invalid UTF-8 in the header" (Array.concat [ BitConverter.GetBytes 4UL; [| 0x22uy; 0xFFuy; 0x22uy; 0x20uy |] ]) "header is not valid JSON: not valid UTF-8"
        fileCase "a header that is not an object" """[1, 2, 3]""" [||] "header is an array, not a JSON object"
        fileCase "a tensor entry that is not an object" """{"a": 5}""" [||] "tensor 'a': entry is a number, not an object"
        fileCase "an unknown dtype" ("{" + tensor "a" "F31" "[1]" 0L 4L + "}") (z 4) "tensor 'a': unknown dtype 'F31'"
        fileCase "a missing dtype" """{"a":{"shape":[1],"data_offsets":[0,4]}}""" (z 4) "tensor 'a': missing dtype"
        fileCase "a missing shape" """{"a":{"dtype":"F32","data_offsets":[0,4]}}""" (z 4) "tensor 'a': missing shape"
        fileCase "a shape that is not an array" ("{" + tensor "a" "F32" "\"4\"" 0L 4L + "}") (z 4) "tensor 'a': shape is a string, not an array of integers"
        fileCase "a fractional dimension" ("{" + tensor "a" "F32" "[1.5]" 0L 4L + "}") (z 4) "tensor 'a': shape entry 0 is 1.5, not an integer"
        fileCase "a negative dimension" ("{" + tensor "a" "F32" "[2, -1]" 0L 4L + "}") (z 4) "tensor 'a': negative dimension -1 in shape"
        fileCase "an overflowing shape" ("{" + tensor "a" "F32" "[4294967296, 4294967296]" 0L 4L + "}") (z 4) "tensor 'a': shape [4294967296, 4294967296] overflows a 64-bit byte count"
        fileCase "a dimension beyond 64 bits" ("{" + tensor "a" "F32" "[99999999999999999999]" 0L 4L + "}") (z 4) "dimension 99999999999999999999 in shape overflows a 64-bit integer"
        fileCase "missing data_offsets" """{"a":{"dtype":"F32","shape":[1]}}""" (z 4) "tensor 'a': missing data_offsets"
        fileCase "malformed data_offsets" """{"a":{"dtype":"F32","shape":[1],"data_offsets":[0]}}""" (z 4) "tensor 'a': data_offsets must be [begin, end], got [0]"
        fileCase "negative data_offsets" ("{" + tensor "a" "F32" "[1]" -4L 0L + "}") (z 4) "tensor 'a': data_offsets must be two non-negative integers, got [-4, 0]"
        fileCase "data_offsets outside the data area" ("{" + tensor "a" "F32" "[2]" 0L 8L + "}") (z 4) "tensor 'a': data_offsets [0, 8] lie outside the data area (4 bytes)"
        fileCase "data_offsets ending before they begin" ("{" + tensor "a" "F32" "[0]" 4L 0L + "}") (z 4) "tensor 'a': data_offsets [4, 0] end before they begin"
        fileCase "overlapping tensors" ("{" + tensor "a" "F32" "[2]" 0L 8L + "," + tensor "b" "F32" "[2]" 4L 12L + "}") (z 12) "tensors 'a' and 'b' overlap"
        fileCase "a size that does not match shape x dtype" ("{" + tensor "a" "F32" "[3]" 0L 8L + "}") (z 8) "tensor 'a': data_offsets [0, 8] span 8 bytes but shape [3] of F32 needs 12"
        fileCase "a hole in the data area" ("{" + tensor "a" "F32" "[1]" 0L 4L + "," + tensor "b" "F32" "[1]" 8L 12L + "}") (z 12) "bytes 4..8 of the data area belong to no tensor (hole before 'b')"
        fileCase "trailing bytes after the last tensor" ("{" + tensor "a" "F32" "[1]" 0L 4L + "}") (z 6) "bytes 4..6 of the data area belong to no tensor (trailing data)"
        fileCase "duplicate tensor names" ("{" + tensor "a" "F32" "[1]" 0L 4L + "," + tensor "a" "F32" "[1]" 4L 8L + "}") (z 8) "header has a duplicate key 'a'"
        fileCase "non-string metadata" ("{\"__metadata__\":{\"epochs\":3}," + tensor "a" "F32" "[1]" 0L 4L + "}") (z 4) "__metadata__ value for 'epochs' is a number, not a string"
        fileCase "metadata that is not an object" ("{\"__metadata__\":[]," + tensor "a" "F32" "[1]" 0L 4L + "}") (z 4) "__metadata__ is an array, not an object of strings"

        test "an index naming a missing shard" {
            use dir = new TempDir()
            writeSafetensors (dir.File "model-00001-of-00002.safetensors") ("{" + tensor "a" "F32" "[1]" 0L 4L + "}") (z 4)
            let index = dir.File "model.safetensors.index.json"
            File.WriteAllText(index, """{"metadata":{"total_size":8},"weight_map":{"a":"model-00001-of-00002.safetensors","b":"model-00002-of-00002.safetensors"}}""")
            expectProblem dir.Path index "shard 'model-00002-of-00002.safetensors' (named for tensor 'b') does not exist"
        }

        test "an index naming a tensor absent from its shard" {
            use dir = new TempDir()
            writeSafetensors (dir.File "s1.safetensors") ("{" + tensor "a" "F32" "[1]" 0L 4L + "}") (z 4)
            writeSafetensors (dir.File "s2.safetensors") ("{" + tensor "b" "F32" "[1]" 0L 4L + "}") (z 4)
            let index = dir.File "model.safetensors.index.json"
            File.WriteAllText(index, """{"weight_map":{"a":"s1.safetensors","b":"s2.safetensors","c":"s2.safetensors"}}""")
            expectProblem dir.Path index "tensor 'c' is mapped to 's2.safetensors' but that shard does not contain it"
        }

        test "an index mapping a tensor to the wrong shard" {
            use dir = new TempDir()
            writeSafetensors (dir.File "s1.safetensors") ("{" + tensor "a" "F32" "[1]" 0L 4L + "}") (z 4)
            writeSafetensors (dir.File "s2.safetensors") ("{" + tensor "b" "F32" "[1]" 0L 4L + "}") (z 4)
            let index = dir.File "model.safetensors.index.json"
            File.WriteAllText(index, """{"weight_map":{"a":"s2.safetensors","b":"s1.safetensors"}}""")
            expectProblem dir.Path index "tensor 'a' is mapped to 's2.safetensors' but lives in 's1.safetensors'"
        }

        test "an index without weight_map, or with a path outside the folder" {
            use dir = new TempDir()
            let index = dir.File "model.safetensors.index.json"
            File.WriteAllText(index, """{"metadata":{}}""")
            expectProblem dir.Path index "index has no weight_map"
            File.WriteAllText(index, """{"weight_map":{"a":"../x.safetensors"}}""")
            expectProblem dir.Path index "weight_map entry for 'a' names '../x.safetensors', not a file in the folder"
        }

        test "the same tensor in two files of a folder" {
            use dir = new TempDir()
            writeSafetensors (dir.File "a.safetensors") ("{" + tensor "w" "F32" "[1]" 0L 4L + "}") (z 4)
            let second = dir.File "b.safetensors"
            writeSafetensors second ("{" + tensor "w" "F32" "[1]" 0L 4L + "}") (z 4)
            expectProblem dir.Path second "tensor 'w' also appears in"
        }

        test "a malformed shard is blamed by its own name" {
            use dir = new TempDir()
            let bad = dir.File "s1.safetensors"
            writeSafetensors bad ("{" + tensor "a" "F64" "[1]" 0L 4L + "}") (z 4)
            File.WriteAllText(dir.File "model.safetensors.index.json", """{"weight_map":{"a":"s1.safetensors"}}""")
            expectProblem dir.Path bad "span 4 bytes but shape [1] of F64 needs 8"
        }

        test "missing paths and empty folders are reported plainly" {
            use dir = new TempDir()
            let e = Expect.throwsT<FileNotFoundException> (fun () -> Checkpoint.Open(dir.File "nope") |> ignore) "missing"
            Expect.throwsT<FileNotFoundException> (fun () -> Checkpoint.Open(dir.Path) |> ignore) "empty folder"
        }

        testProperty "random bytes never crash the reader: they open or fail with a CheckpointFormatException" <| fun (bytes: byte[]) (headerText: string) ->
            use dir = new TempDir()
            let f = dir.File "fuzz.safetensors"
            // Half the cases get a plausible length prefix so the JSON parser sees the noise.
            let content =
                if bytes.Length % 2 = 0 && not (isNull headerText) then safetensorsBytes headerText bytes else bytes
            File.WriteAllBytes(f, content)
            try
                use cp = Checkpoint.Open f
                for t in cp.Tensors do
                    cp.Load(t.Name).Dispose()
            with :? CheckpointFormatException as e ->
                Expect.isTrue (e.Message.StartsWith(f + ": ")) e.Message
    ]
