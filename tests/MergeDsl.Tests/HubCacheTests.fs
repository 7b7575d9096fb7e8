/// Model references resolved offline in a Hugging Face hub cache (a fake one: refs/, snapshots/ with links into
/// blobs/), local folders taking precedence over repo ids, and the one-line errors for what is not cached.
module MergeDsl.Tests.HubCacheTests

open System
open System.IO
open System.Security.Cryptography
open Expecto
open TorchSharp
open MergeDsl
open MergeDsl.Core.Checkpoints
open MergeDsl.Tests.CheckpointFixtures
open MergeDsl.Tests.CliHarness

let private commitA = String('a', 40)
let private commitB = "0123456789abcdef0123456789abcdef01234567"

/// Writes a tiny model (config.json + model.safetensors) whose every entry is `value`.
let private writeTiny (folder: string) (value: float32) =
    use scope = torch.NewDisposeScope()
    use v = (float value).ToScalar()
    let t = torch.full([| 2L; 3L |], v, dtype = torch.float32)
    CheckpointWriter.WriteAll(folder, readOnlyDict [ "model.layers.0.mlp.up_proj.weight", t ], CheckpointWriterOptions())
    File.WriteAllText(Path.Combine(folder, "config.json"), """{"model_type": "llama"}""")

/// Adds `model`'s files to the cache repository `models--org--name` as snapshot `commit`: blobs named by SHA-256,
/// snapshot entries relative links ../../blobs/<hash>, as huggingface_hub lays them out.
let private addSnapshot (cache: string) (repoId: string) (commit: string) (model: string) =
    let repo = Path.Combine(cache, "models--" + repoId.Replace("/", "--"))
    let blobs = Path.Combine(repo, "blobs")
    let snap = Path.Combine(repo, "snapshots", commit)
    Directory.CreateDirectory blobs |> ignore
    Directory.CreateDirectory snap |> ignore
    for f in Directory.GetFiles model do
        let bytes = File.ReadAllBytes f
        let hash = Convert.ToHexString(SHA256.HashData bytes).ToLowerInvariant()
        let blob = Path.Combine(blobs, hash)
        if not (File.Exists blob) then File.WriteAllBytes(blob, bytes)
        File.CreateSymbolicLink(Path.Combine(snap, Path.GetFileName f), Path.Combine("..", "..", "blobs", hash)) |> ignore
    snap

let private setRef (cache: string) (repoId: string) (name: string) (commit: string) =
    let file = Path.Combine(cache, "models--" + repoId.Replace("/", "--"), "refs", name)
    Directory.CreateDirectory(Path.GetDirectoryName file) |> ignore
    File.WriteAllText(file, commit)

/// A cache with org/tiny: main → commit A (all 1s), tag v1 → commit B (all 3s).
let private fakeCache (dir: TempDir) =
    let cache = dir.File "hub"
    let m1, m3 = dir.File "src1", dir.File "src3"
    writeTiny m1 1.0f
    writeTiny m3 3.0f
    let snapA = addSnapshot cache "org/tiny" commitA m1
    let snapB = addSnapshot cache "org/tiny" commitB m3
    setRef cache "org/tiny" "main" commitA
    setRef cache "org/tiny" "v1" commitB
    cache, snapA, snapB

let private expectMessage (f: unit -> 'a) (parts: string list) =
    try
        f () |> ignore
        failtest "accepted"
    with :? ModelReferenceException as e ->
        Expect.isFalse (e.Message.Contains '\n') "one line"
        for p in parts do Expect.stringContains e.Message p "the message names it"

/// Runs `body` with HF_HUB_CACHE set to `cache` (restored after; the tests using it are sequenced).
let private withCache (cache: string) (body: unit -> 'a) =
    let old = Environment.GetEnvironmentVariable "HF_HUB_CACHE"
    Environment.SetEnvironmentVariable("HF_HUB_CACHE", cache)
    try body ()
    finally Environment.SetEnvironmentVariable("HF_HUB_CACHE", old)

let private valueOf (folder: string) =
    use cp = Checkpoint.Open folder
    use t = cp.Load "model.layers.0.mlp.up_proj.weight"
    t.mean().item<float32>()

[<Tests>]
let tests =
    testSequenced <| testList "Hugging Face cache" [
        test "repo ids resolve through refs/main, a tag in refs/, and a full commit hash" {
            use dir = new TempDir()
            let cache, snapA, snapB = fakeCache dir
            let hub = HubCache cache
            Expect.equal (hub.Resolve("org/tiny")) snapA "refs/main"
            Expect.equal (hub.Resolve("org/tiny", "main")) snapA "@main"
            Expect.equal (hub.Resolve("org/tiny", "v1")) snapB "a tag"
            Expect.equal (hub.Resolve("org/tiny", commitB)) snapB "a commit hash"
            let r = ModelReference.Resolve("org/tiny@v1", [| dir.Path |], hub)
            Expect.equal r.Folder snapB "org/name@revision"
            // The snapshot's files are links into blobs/: the loader's link rule follows them.
            Expect.equal (valueOf r.Folder) 3.0f "reads the blob"
        }
        test "what is not in the cache is one line naming it, the cache and the cure" {
            use dir = new TempDir()
            let cache, _, snapB = fakeCache dir
            let hub = HubCache cache
            expectMessage (fun () -> hub.Resolve "org/none") [ $"org/none: not in the Hugging Face cache at {cache} (no network access; download it first)" ]
            expectMessage (fun () -> hub.Resolve("org/tiny", "dev")) [ "org/tiny@dev: revision 'dev' is not in the Hugging Face cache"; "refs: main, v1" ]
            expectMessage (fun () -> hub.Resolve("org/tiny", commitB.Replace('0', 'f'))) [ "snapshot"; "not in the Hugging Face cache" ]
            setRef cache "org/tiny" "pr/1" commitB
            Expect.equal (hub.Resolve("org/tiny", "refs/pr/1")) snapB "a pull-request ref, named as stored"
            setRef cache "org/tiny" "broken" "not-a-hash"
            expectMessage (fun () -> hub.Resolve("org/tiny", "broken")) [ "refs/broken: not a commit hash" ]
            expectMessage (fun () -> ModelReference.Resolve("./missing", [| dir.Path |], hub)) [ "./missing: no such model folder or file" ]
            expectMessage (fun () -> ModelReference.Resolve("org/none", [| dir.Path |], hub)) [ "org/none: not in the Hugging Face cache" ]
            expectMessage (fun () -> ModelReference.Resolve("typo", [| dir.Path |], hub)) [ $"typo: no such model folder or file (looked in {dir.Path}), and not in the Hugging Face cache at {cache}" ]
        }
        test "cache location: HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub" {
            let vars = [ "HF_HUB_CACHE"; "HUGGINGFACE_HUB_CACHE"; "HF_HOME"; "XDG_CACHE_HOME" ]
            let saved = vars |> List.map (fun v -> v, Environment.GetEnvironmentVariable v)
            try
                for v in vars do Environment.SetEnvironmentVariable(v, null)
                let home = Environment.GetFolderPath Environment.SpecialFolder.UserProfile
                Expect.equal (HubCache.FromEnvironment().Root) (Path.Combine(home, ".cache", "huggingface", "hub")) "default"
                Environment.SetEnvironmentVariable("HF_HOME", "/x/hf")
                Expect.equal (HubCache.FromEnvironment().Root) "/x/hf/hub" "HF_HOME/hub"
                Environment.SetEnvironmentVariable("HF_HUB_CACHE", "/y/cache")
                Expect.equal (HubCache.FromEnvironment().Root) "/y/cache" "HF_HUB_CACHE wins"
            finally
                for v, value in saved do Environment.SetEnvironmentVariable(v, value)
        }
        test "a local folder spelled like a repo id wins over the cache (as transformers and mergekit decide)" {
            use dir = new TempDir()
            let cache, snapA, _ = fakeCache dir
            let hub = HubCache cache
            let local = dir.File "work"
            writeTiny (Path.Combine(local, "org", "tiny")) 7.0f
            let r = ModelReference.Resolve("org/tiny", [| local |], hub)
            Expect.equal r.Folder (Path.Combine(local, "org", "tiny")) "the local folder"
            let elsewhere = ModelReference.Resolve("org/tiny", [| dir.File "src1" |], hub)
            Expect.equal elsewhere.Folder snapA "no such local folder: the cache"
        }
        test "model+adapter splits at the '+' whose sides both resolve; repo ids on either side" {
            use dir = new TempDir()
            let cache, snapA, snapB = fakeCache dir
            let hub = HubCache cache
            let odd = dir.File "a+b"
            Directory.CreateDirectory odd |> ignore
            Expect.equal (ModelReference.Resolve("a+b", [| dir.Path |], hub).Adapter) null "a folder named a+b is a folder"
            let r = ModelReference.Resolve("a+b+org/tiny@v1", [| dir.Path |], hub)
            Expect.equal (r.Folder, r.Adapter) (odd, snapB) "model a+b, adapter from the cache"
            let r2 = ModelReference.Resolve("org/tiny+src1", [| dir.Path |], hub)
            Expect.equal (r2.Folder, r2.Adapter) (snapA, dir.File "src1") "model from the cache, local adapter"
            Expect.equal (ModelReference.Resolve(r2.Canonical, [| dir.Path |], hub)) (ModelReference(r2.Canonical, snapA, dir.File "src1")) "canonical text resolves to the same folders"
        }
        test "run, inspect and a YAML config take repo ids (HF_HUB_CACHE); a missing one is one line, exit 2" {
            use dir = new TempDir()
            let cache, _, _ = fakeCache dir
            withCache cache (fun () ->
                let out = dir.File "avg"
                let code, _, err = mergedsl [ "run"; "average"; "--model"; "org/tiny"; "--model"; "org/tiny@v1"; "--out"; out; "--quiet" ]
                Expect.equal code 0 err
                Expect.equal (valueOf out) 2.0f "average of the main (1) and v1 (3) snapshots"
                Expect.isTrue (File.Exists(Path.Combine(out, "config.json"))) "config.json copied from the snapshot (a link into blobs/)"
                Expect.stringContains (File.ReadAllText(Path.Combine(out, "README.md"))) "org/tiny@v1" "the model card names the repo id"
                let code, stdout, err = mergedsl [ "inspect"; "org/tiny@v1" ]
                Expect.equal code 0 err
                Expect.stringContains stdout "up_proj" "inspect reads the snapshot"
                let yaml = dir.File "merge.yml"
                File.WriteAllText(yaml, "merge_method: linear\nmodels:\n  - model: org/tiny\n    parameters:\n      weight: 1.0\n  - model: org/tiny@v1\n    parameters:\n      weight: 3.0\n")
                let out2 = dir.File "lin"
                let code, _, err = mergedsl [ "run"; yaml; "--out"; out2; "--quiet" ]
                Expect.equal code 0 err
                Expect.equal (valueOf out2) 2.5f "(1·1 + 3·3) / 4"
                let code, _, err = mergedsl [ "run"; "average"; "--model"; "org/absent"; "--out"; dir.File "x" ]
                Expect.equal code 2 "usage error"
                Expect.equal (err.Trim()) $"mergedsl: --model org/absent: not in the Hugging Face cache at {cache} (no network access; download it first)" "one line"
                Expect.isFalse (Directory.Exists(dir.File "x")) "nothing written")
        }
    ]
