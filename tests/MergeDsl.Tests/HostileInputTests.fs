/// Model folders as an attacker (or an accident) leaves them: links out of the folder, FIFOs, device
/// files, inputs truncated mid-run, unfinished outputs of another run, and fuzzed headers.
module MergeDsl.Tests.HostileInputTests

open System
open System.IO
open System.Runtime.InteropServices
open System.Security.Cryptography
open System.Text
open System.Threading.Tasks
open Expecto
open TorchSharp
open MergeDsl
open MergeDsl.Core.Checkpoints
open MergeDsl.Core.Compilation
open MergeDsl.Core.Execution
open MergeDsl.Core.Models
open MergeDsl.Core.Moe
open MergeDsl.Tests.CheckpointFixtures

[<DllImport("libc", SetLastError = true)>]
extern int mkfifo(string path, uint32 mode)

let private mergedsl = MergeDsl.Tests.CliHarness.mergedsl

let private makeFifo (path: string) =
    if mkfifo (path, 0o600u) <> 0 then failtestf "mkfifo %s failed (errno %d)" path (Marshal.GetLastPInvokeError())

/// Runs f on another thread; a hang fails the test instead of blocking the suite.
let private within (seconds: float) (what: string) (f: unit -> 'a) : 'a =
    let t = Task.Run(fun () -> f ())
    if not (t.Wait(TimeSpan.FromSeconds seconds)) then failtestf "%s did not finish within %.0f s (it hangs)" what seconds
    t.Result

let private oneLine (err: string) = err.Trim().Split('\n').Length = 1

let private copyModel (src: string) (dst: string) =
    Directory.CreateDirectory dst |> ignore
    for f in Directory.GetFiles src do File.Copy(f, Path.Combine(dst, Path.GetFileName f))
    dst

/// Rebuilds a model folder as a Hugging Face hub cache repository: each file becomes a blob named by its
/// SHA-256 in <root>/models--test--<name>/blobs, and snapshots/<rev>/<file> a relative link ../../blobs/<hash>.
let private hubify (root: string) (name: string) (model: string) (extra: (string * string) list) =
    let repo = Path.Combine(root, $"models--test--{name}")
    let blobs = Path.Combine(repo, "blobs")
    let snap = Path.Combine(repo, "snapshots", "0123456789abcdef")
    Directory.CreateDirectory blobs |> ignore
    Directory.CreateDirectory snap |> ignore
    let add (fileName: string) (bytes: byte[]) =
        let hash = Convert.ToHexString(SHA256.HashData bytes).ToLowerInvariant()
        let blob = Path.Combine(blobs, hash)
        if not (File.Exists blob) then File.WriteAllBytes(blob, bytes)
        File.CreateSymbolicLink(Path.Combine(snap, fileName), Path.Combine("..", "..", "blobs", hash)) |> ignore
    for f in Directory.GetFiles model do add (Path.GetFileName f) (File.ReadAllBytes f)
    for (n, text) in extra do add n (Encoding.UTF8.GetBytes text)
    snap

let private tensorsOf (folder: string) =
    use cp = Checkpoint.Open folder
    [ for t in cp.Tensors -> t.Name, (use v = cp.Load t.Name in v.clone()) ] |> Map.ofList

let private sameTensors (a: Map<string, torch.Tensor>) (b: Map<string, torch.Tensor>) =
    a.Count = b.Count && a |> Map.forall (fun k v -> b.ContainsKey k && v.shape = b[k].shape && v.eq(b[k]).all().item<bool>())

/// Nothing at the target and no temporary folder beside it.
let private nothingWritten (out: string) =
    Expect.isFalse (Directory.Exists out || File.Exists out) $"nothing at {out}"
    Expect.isEmpty (leftoversBeside out) "no temporary folder left beside the output"

let private expectRefused (code: int, _: string, err: string) (mustContain: string list) =
    Expect.notEqual code 0 "non-zero exit"
    Expect.isTrue (oneLine err) $"one line: {err}"
    for s in mustContain do Expect.stringContains err s "the error names it"

let private strict = InputFilePolicy.Strict
let private permissive = InputFilePolicy(AllowLinksOutside = true)

/// A source that truncates a file of the checkpoint it wraps just before its n-th load.
type private TruncatingSource(inner: Checkpoint, file: string, atLoad: int) =
    let mutable loads = 0
    interface ITensorSource with
        member _.Label = inner.Label
        member _.Tensors = inner.Tensors
        member _.Metadata = inner.Metadata
        member _.TryGetInfo(name, info) = inner.TryGetInfo(name, &info)
        member _.Load name =
            loads <- loads + 1
            if loads = atLoad then
                use fs = new FileStream(file, FileMode.Open, FileAccess.Write)
                fs.SetLength 64L
            inner.Load name
        member _.Dispose() = inner.Dispose()

let private writeModel (folder: string) (tensors: (string * torch.Tensor) list) =
    CheckpointWriter.WriteAll(folder, readOnlyDict tensors, CheckpointWriterOptions())

[<Tests>]
let tests =
    testSequenced <| testList "Hostile model folders" [
        test "a Hugging Face cache snapshot (weights, index, copied-through files all links into blobs/) works for inspect, plan, run and the loaders" {
            use dir = new TempDir()
            let b, es = MergeDsl.Tests.CliTests.zoo.Value
            let sharded = es |> List.last
            Expect.isTrue (File.Exists(Path.Combine(sharded, Checkpoint.IndexFileName))) "the last demo expert is sharded"
            let hb = hubify dir.Path "base" b [ "tokenizer.json", """{"version":"1.0","model":{}}"""; "special_tokens_map.json", "{}" ]
            let he = hubify dir.Path "expert" sharded []
            for f in Directory.GetFiles he do
                Expect.isNotNull (FileInfo(f).LinkTarget) $"{f} is a link"
            let code, _, err = mergedsl [ "inspect"; he ]
            Expect.equal code 0 $"inspect a snapshot: {err}"
            let code, _, err = mergedsl [ "plan"; "task-arithmetic"; "--base"; hb; "--model"; he ]
            Expect.equal code 0 $"plan: {err}"
            let out = dir.File "out"
            let code, _, err = mergedsl [ "run"; "task-arithmetic"; "--base"; hb; "--model"; he; "--out"; out; "--quiet" ]
            Expect.equal code 0 $"run: {err}"
            Expect.equal (File.ReadAllText(Path.Combine(out, "tokenizer.json"))) """{"version":"1.0","model":{}}""" "tokenizer.json came through"
            Expect.isNull (FileInfo(Path.Combine(out, "tokenizer.json")).LinkTarget) "as a regular file, not a link"
            Expect.isTrue (File.Exists(Path.Combine(out, "config.json"))) "config.json came through"
            let direct = dir.File "direct"
            let code, _, err = mergedsl [ "run"; "task-arithmetic"; "--base"; b; "--model"; sharded; "--out"; direct; "--quiet" ]
            Expect.equal code 0 err
            Expect.isTrue (sameTensors (tensorsOf out) (tensorsOf direct)) "same result as from the plain folders"
            // eval/adapt load through MoeModelFolder, upscale through ClipVisionConfig + ReadConfigJson.
            use bundle = MoeModelFolder.Load hb
            Expect.isGreaterThan (bundle.Model.StateTensors().Count) 0 "MoeModelFolder.Load reads a snapshot"
            Expect.equal (ClipVisionConfig.Load hb).HiddenSize (ClipVisionConfig.Load b).HiddenSize "ClipVisionConfig.Load reads a snapshot"
            use viaFile = Checkpoint.Open(Path.Combine(he, Checkpoint.IndexFileName))
            Expect.equal viaFile.Tensors.Count (tensorsOf sharded).Count "the index named directly"
            // An interrupted download leaves a dangling link: refused by name, not skipped.
            let partial = Path.Combine(dir.Path, "models--test--partial", "snapshots", "r")
            Directory.CreateDirectory partial |> ignore
            File.CreateSymbolicLink(Path.Combine(partial, Checkpoint.SingleFileName), Path.Combine("..", "..", "blobs", "missing")) |> ignore
            expectRefused (mergedsl [ "inspect"; partial ]) [ Path.Combine(partial, Checkpoint.SingleFileName); "does not exist" ]
        }

        test "a link out of the model folder is refused naming link and target, and nothing is written" {
            use dir = new TempDir()
            let b, _ = MergeDsl.Tests.CliTests.zoo.Value
            let secret = dir.File "secret.txt"
            File.WriteAllText(secret, "TOP SECRET")
            let m = copyModel b (dir.File "model")
            let link = Path.Combine(m, "tokenizer.json")
            File.CreateSymbolicLink(link, secret) |> ignore
            let out = dir.File "out"
            expectRefused (mergedsl [ "run"; "average"; "--model"; m; "--out"; out; "--quiet" ]) [ link; secret ]
            nothingWritten out
            // Weights linked out of the folder.
            let w = dir.File "weights-elsewhere"
            Directory.CreateDirectory w |> ignore
            let outside = Path.Combine(w, "model.safetensors")
            File.Copy(Path.Combine(b, "model.safetensors"), outside)
            let m2 = dir.File "model2"
            Directory.CreateDirectory m2 |> ignore
            let wlink = Path.Combine(m2, "model.safetensors")
            File.CreateSymbolicLink(wlink, outside) |> ignore
            expectRefused (mergedsl [ "inspect"; m2 ]) [ wlink; outside ]
            Expect.throwsT<CheckpointFormatException> (fun () -> Checkpoint.Open(m2, true, strict).Dispose()) "strict policy"
            use allowed = Checkpoint.Open(m2, true, permissive)
            Expect.isGreaterThan allowed.Tensors.Count 0 "the explicit policy follows it"
            // A link that stays inside the folder is fine.
            let m3 = dir.File "model3"
            Directory.CreateDirectory(Path.Combine(m3, "real")) |> ignore
            File.Copy(Path.Combine(b, "model.safetensors"), Path.Combine(m3, "real", "weights.bin"))
            File.CreateSymbolicLink(Path.Combine(m3, "model.safetensors"), Path.Combine("real", "weights.bin")) |> ignore
            use inside = Checkpoint.Open(m3, true, strict)
            Expect.isGreaterThan inside.Tensors.Count 0 "a link inside the folder is followed"
            // Copy-through selection refuses the outside link on its own too.
            Expect.throwsT<CheckpointFormatException> (fun () -> HfFiles.CopyThroughFiles(m, strict) |> ignore) "copy-through selection"
        }

        test "a FIFO (copied-through file, weights, index) is refused at once, never waited on" {
            use dir = new TempDir()
            let b, es = MergeDsl.Tests.CliTests.zoo.Value
            let m = copyModel b (dir.File "model")
            let fifo = Path.Combine(m, "tokenizer_config.json")
            makeFifo fifo
            let out = dir.File "out"
            let result = within 30.0 "run with a FIFO tokenizer_config.json" (fun () -> mergedsl [ "run"; "average"; "--model"; m; "--out"; out; "--quiet" ])
            expectRefused result [ fifo; "FIFO" ]
            nothingWritten out
            let m2 = dir.File "model2"
            Directory.CreateDirectory m2 |> ignore
            makeFifo (Path.Combine(m2, "model.safetensors"))
            expectRefused (within 30.0 "inspect a FIFO model.safetensors" (fun () -> mergedsl [ "inspect"; m2 ])) [ "model.safetensors"; "FIFO" ]
            let m3 = copyModel (List.last es) (dir.File "model3")
            let index = Path.Combine(m3, Checkpoint.IndexFileName)
            File.Delete index
            makeFifo index
            expectRefused (within 30.0 "inspect with a FIFO index" (fun () -> mergedsl [ "inspect"; m3 ])) [ index; "FIFO" ]
            within 30.0 "Checkpoint.Open of a FIFO named directly" (fun () ->
                Expect.throwsT<CheckpointFormatException> (fun () -> Checkpoint.Open(Path.Combine(m2, "model.safetensors")).Dispose()) "refused")
        }

        test "/dev/zero as a shard or as the index is refused at once" {
            use dir = new TempDir()
            let _, es = MergeDsl.Tests.CliTests.zoo.Value
            let m = copyModel (List.last es) (dir.File "model")
            let shard = Directory.GetFiles(m, "*.safetensors") |> Array.sort |> Array.head
            File.Delete shard
            File.CreateSymbolicLink(shard, "/dev/zero") |> ignore
            expectRefused (within 30.0 "inspect with a /dev/zero shard" (fun () -> mergedsl [ "inspect"; m ])) [ shard; "/dev/zero" ]
            within 30.0 "open with links allowed" (fun () ->
                let e = Expect.throwsC (fun () -> Checkpoint.Open(m, true, permissive).Dispose()) id
                Expect.stringContains e.Message "character device" "refused for what it is, even when links may leave the folder")
            let m2 = copyModel (List.last es) (dir.File "model2")
            let index = Path.Combine(m2, Checkpoint.IndexFileName)
            File.Delete index
            File.CreateSymbolicLink(index, "/dev/zero") |> ignore
            expectRefused (within 30.0 "inspect with a /dev/zero index" (fun () -> mergedsl [ "inspect"; m2 ])) [ index; "/dev/zero" ]
            within 30.0 "open with links allowed" (fun () ->
                let e = Expect.throwsC (fun () -> Checkpoint.Open(m2, true, permissive).Dispose()) id
                Expect.stringContains e.Message "character device" "refused for what it is")
        }

        test "an index or config larger than the JSON bound is refused before it is read" {
            use dir = new TempDir()
            let _, es = MergeDsl.Tests.CliTests.zoo.Value
            let m = copyModel (List.last es) (dir.File "model")
            let index = Path.Combine(m, Checkpoint.IndexFileName)
            using (new FileStream(index, FileMode.Open, FileAccess.Write)) (fun fs -> fs.SetLength(ModelFiles.MaxJsonBytes + 1L))
            let e = Expect.throwsC (fun () -> Checkpoint.Open(m).Dispose()) id
            Expect.stringContains e.Message "limit" "names the bound"
            Expect.isTrue (e :? CheckpointFormatException) "a format error"
        }

        test "an input truncated or rewritten after open fails with one line instead of SIGBUS" {
            use dir = new TempDir()
            let m = dir.File "m"
            writeModel m [ "big", torch.arange(65536L, dtype = torch.float32); "small", torch.ones(4L) ]
            let file = Path.Combine(m, "model.safetensors")
            for zeroCopy in [ true; false ] do
                use cp = Checkpoint.Open(m, zeroCopy)
                using (new FileStream(file, FileMode.Open, FileAccess.Write)) (fun fs -> fs.SetLength 100L)
                let e = Expect.throwsC (fun () -> (cp.Load "big").Dispose()) id
                Expect.isTrue (e :? CheckpointFormatException) $"a format error, got {e.GetType().Name}"
                Expect.stringContains e.Message file "names the file"
                Expect.stringContains e.Message "changed while being read" "says what happened"
                Expect.isFalse (e.Message.Contains '\n') "one line"
                Expect.throwsT<CheckpointFormatException> (fun () -> cp.EnsureUnchanged()) "the commit-time check fails too"
                writeModel (dir.File $"m{zeroCopy}") [ "big", torch.arange(65536L, dtype = torch.float32); "small", torch.ones(4L) ]
                File.Copy(Path.Combine(dir.File $"m{zeroCopy}", "model.safetensors"), file, true)
            // Same size, rewritten in place.
            use cp = Checkpoint.Open m
            File.SetLastWriteTimeUtc(file, DateTime.UtcNow.AddHours 1.0)
            let e = Expect.throwsC (fun () -> (cp.Load "small").Dispose()) id
            Expect.stringContains e.Message "modified while being read" "a rewrite is caught too"
        }

        test "a mapping truncated after the check is reported by the prefault, not a crash" {
            use dir = new TempDir()
            let m = dir.File "m"
            writeModel m [ "big", torch.arange(262144L, dtype = torch.float32) ]
            use cp = Checkpoint.Open m
            let info = cp.Tensors[0]
            using (new FileStream(Path.Combine(m, "model.safetensors"), FileMode.Open, FileAccess.Write)) (fun fs -> fs.SetLength 0L)
            match NativeTensors.Populate(cp.Address "big", info.ByteLength) with
            | NativeTensors.PageIn.Unreadable -> ()
            | NativeTensors.PageIn.Unsupported -> skiptest "MADV_POPULATE_READ needs Linux 5.14+"
            | r -> failtestf "populate of a truncated mapping returned %A" r
        }

        test "a merge whose input is truncated after it was planned fails with one line and leaves nothing" {
            use dir = new TempDir()
            let b, e1, out = dir.File "base", dir.File "e1", dir.File "out"
            let tensors k = [ for i in 0..5 -> $"layer.{i}.weight", torch.full([| 128L; 128L |], (float32 (i + k)).ToScalar()) ]
            writeModel b (tensors 0)
            writeModel e1 (tensors 1)
            use cb = Checkpoint.Open b
            use c1 = Checkpoint.Open e1
            // Truncated when the executor first reads this input, after it was opened, validated and planned. Not
            // later: a zero-copy view of this file still in flight on the compute thread would then fault (SIGBUS),
            // the window docs/checkpoints.md describes; a later truncation made this test kill the test process.
            let truncating = new TruncatingSource(c1, Path.Combine(e1, "model.safetensors"), 1)
            let ins = MergeInputs(NamedSource("base", cb), [| NamedSource("e1", truncating) |])
            let e = Expect.throwsC (fun () -> Merger.ToFolder(Methods.taskArithmetic 0.5, ins, out) |> ignore) id
            Expect.isTrue (e :? CheckpointFormatException) $"a format error, got {e.GetType().Name}: {e.Message}"
            Expect.stringContains e.Message (Path.Combine(e1, "model.safetensors")) "names the file"
            nothingWritten out
        }

        test "an unfinished output folder is refused by inspect, run and the loaders" {
            use dir = new TempDir()
            let b, _ = MergeDsl.Tests.CliTests.zoo.Value
            let tmp = copyModel b (dir.File "merged.tmp-1a2b3c4d")
            File.WriteAllText(Path.Combine(tmp, OutputMarkers.Unfinished),
                """{"pid":4242,"processStart":"2026-11-30T01:00:00Z","host":"h","startedUtc":"2026-11-30T01:00:00Z"}""")
            let expected = $"{tmp}: unfinished output of a mergedsl run (pid 4242); it is not a model"
            expectRefused (mergedsl [ "inspect"; tmp ]) [ expected ]
            expectRefused (mergedsl [ "inspect"; Path.Combine(tmp, "model.safetensors") ]) [ "unfinished output of a mergedsl run (pid 4242)" ]
            let out = dir.File "out"
            expectRefused (mergedsl [ "run"; "average"; "--model"; tmp; "--out"; out; "--quiet" ]) [ expected ]
            nothingWritten out
            Expect.throwsT<CheckpointFormatException> (fun () -> (MoeModelFolder.Load tmp).Dispose()) "MoeModelFolder.Load (eval, adapt)"
            Expect.throwsT<CheckpointFormatException> (fun () -> ClipVisionConfig.Load tmp |> ignore) "ClipVisionConfig.Load (upscale)"
            File.WriteAllText(Path.Combine(tmp, OutputMarkers.Unfinished), "garbage")
            let e = Expect.throwsC (fun () -> Checkpoint.Open(tmp).Dispose()) id
            Expect.stringContains e.Message "(pid unknown)" "a marker that cannot be read still refuses"
        }

        test "fuzzed safetensors headers and indexes: clean rejections only, no crash, no hang" {
            let r = MergeDsl.Tests.CheckpointFuzz.run 20000 20261130 (TimeSpan.FromSeconds 10.0)
            Expect.equal r.Hangs 0 "no hang"
            Expect.isEmpty r.Crashes "no crash"
            Expect.equal r.Cases 20000 "every case ran"
            Expect.isGreaterThan r.Rejected 15000 "most mutations are rejected"
            Expect.isGreaterThan r.Accepted 0 "some survive (e.g. flips inside tensor data)"
        }
    ]
