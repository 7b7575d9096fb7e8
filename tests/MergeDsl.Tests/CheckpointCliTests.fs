/// `mergedsl inspect` and `mergedsl demo`, run in-process through Program.main.
module MergeDsl.Tests.CheckpointCliTests

open System
open System.IO
open System.Text.Json
open Expecto
open MergeDsl.Tests.CheckpointFixtures

let private runCli = MergeDsl.Tests.CliHarness.mergedsl

[<Tests>]
let tests =
    testSequenced <| testList "CLI inspect and demo" [
        test "demo --distances builds the synthetic zoo; inspect lists it, as a table and as JSON" {
            use dir = new TempDir()
            let zoo = dir.File "zoo"
            let code, out, _ = runCli [ "demo"; "--distances"; "--out"; zoo; "--shard-size"; "20KB" ]
            Expect.equal code 0 "demo exits 0"
            Expect.stringContains out "expert_3" "lists the experts"
            Expect.stringContains out "model-00002-of-" "shows the sharded expert's shards"
            let code, out, err = runCli [ "inspect"; Path.Combine(zoo, "base") ]
            Expect.equal code 0 $"inspect exits 0 ({err})"
            Expect.stringContains out "vision_model.encoder.layers.0.mlp.fc1.weight" "tensor names"
            Expect.stringContains out "40 tensors, 19,840 parameters" "totals"
            let code, out, _ = runCli [ "inspect"; Path.Combine(zoo, "expert_3"); "--json" ]
            Expect.equal code 0 "inspect --json exits 0"
            // Other test lists run in parallel and may print too: keep the JSON document's own lines.
            let json = out.Substring(out.IndexOf "{\n", out.LastIndexOf "}" - out.IndexOf "{\n" + 1)
            use doc = JsonDocument.Parse json
            let totals = doc.RootElement.GetProperty "totals"
            Expect.equal (totals.GetProperty("tensors").GetInt32()) 40 "tensors"
            Expect.equal (totals.GetProperty("parameters").GetInt64()) 19840L "parameters"
            Expect.equal (totals.GetProperty("bytes").GetInt64()) (19840L * 4L) "bytes"
            Expect.isGreaterThan (totals.GetProperty("shards").GetInt32()) 1 "sharded"
            Expect.equal (totals.GetProperty("metadata_keys").GetInt32()) 2 "metadata keys"
            let first = doc.RootElement.GetProperty("tensors").[0]
            Expect.equal (first.GetProperty("dtype").GetString()) "F32" "dtype"
        }

        test "inspect on a broken file exits 1 with one line naming the file" {
            use dir = new TempDir()
            let f = dir.File "broken.safetensors"
            writeSafetensors f """{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}""" (Array.zeroCreate 8)
            let code, _, err = runCli [ "inspect"; f ]
            Expect.equal code 1 "exit 1"
            let lines = err.Split('\n', StringSplitOptions.RemoveEmptyEntries) |> Array.filter (fun l -> l.StartsWith "mergedsl")
            Expect.equal lines.Length 1 $"one line: {err}"
            Expect.isFalse (err.Contains "   at ") "no stack trace without --verbose"
            Expect.equal lines[0] $"mergedsl: error: {f}: tensor 'a': data_offsets [0, 8] span 8 bytes but shape [3] of F32 needs 12" "the line"
        }

        test "inspect on a missing path exits 1; a bad --shard-size is a usage error" {
            use dir = new TempDir()
            let code, _, err = runCli [ "inspect"; dir.File "nope" ]
            Expect.equal code 1 "exit 1"
            Expect.stringContains err "nope: no such file or folder" "names the path"
            let code, _, err = runCli [ "demo"; "--distances"; "--out"; dir.File "z"; "--shard-size"; "lots" ]
            Expect.equal code 2 "exit 2"
            Expect.stringContains err "'lots' is not a byte size" "names the value"
            let code, _, err = runCli [ "demo"; "--out"; dir.File "z"; "--shard-size"; "20KB" ]
            Expect.equal code 2 "--shard-size without --distances: exit 2"
            Expect.stringContains err "--shard-size: only with --distances" "names the option"
            Expect.isFalse (Directory.Exists(dir.File "z")) "nothing written"
        }
    ]
