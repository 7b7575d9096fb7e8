/// Output safety: --out compared by real path against the inputs, --force only over mergedsl outputs and atomic,
/// the output lock, stale temporary folders, and adapt/eval refusing bad settings and non-finite training.
module MergeDsl.Tests.OutputSafetyTests

open System
open System.Diagnostics
open System.IO
open Expecto
open TorchSharp
open MergeDsl.Core.Checkpoints
open MergeDsl.Core.Models
open MergeDsl.Core.Evaluation
open MergeDsl.Tests.CliTests

let private oneLine (err: string) = err.Trim().Split('\n').Length = 1

let private root =
    lazy
        (let d = Directory.CreateTempSubdirectory("mergedsl-output-tests-").FullName
         AppDomain.CurrentDomain.ProcessExit.Add(fun _ -> try Directory.Delete(d, true) with _ -> ())
         d)

let private fresh (name: string) = Path.Combine(root.Value, name + "-" + Guid.NewGuid().ToString("N").Substring(0, 8))

let rec private copyDir (src: string) (dst: string) =
    Directory.CreateDirectory dst |> ignore
    for f in Directory.GetFiles src do File.Copy(f, Path.Combine(dst, Path.GetFileName f))
    for d in Directory.GetDirectories src do copyDir d (Path.Combine(dst, Path.GetFileName d))

/// Everything under a folder: relative path -> bytes.
let private snapshot (dir: string) =
    Directory.GetFiles(dir, "*", SearchOption.AllDirectories)
    |> Array.map (fun f -> Path.GetRelativePath(dir, f), File.ReadAllBytes f)
    |> Map.ofArray

/// Names beside `target` that start with its name and a dot (temporary, old, lock).
let private beside (target: string) =
    let name = Path.GetFileName(Path.TrimEndingDirectorySeparator target)
    Directory.GetFileSystemEntries(Path.GetDirectoryName(Path.TrimEndingDirectorySeparator target))
    |> Array.map Path.GetFileName
    |> Array.filter (fun n -> n.StartsWith(name + "."))
    |> List.ofArray

let private twoExperts () =
    let _, es = zoo.Value
    [ "--model"; es[0]; "--model"; es[1] ]

/// A marker as a given process would write it.
let private markFolder (folder: string) (pid: int) (start: DateTime) =
    Directory.CreateDirectory folder |> ignore
    UnfinishedMarker(pid, start, Environment.MachineName, DateTime.UtcNow).WriteTo folder

/// A process that has exited: its pid and start time.
let private deadProcess () =
    use p = Process.Start(ProcessStartInfo("true", UseShellExecute = false))
    let start = p.StartTime.ToUniversalTime()
    p.WaitForExit()
    p.Id, start

[<Tests>]
let tests =
    testSequenced <| testList "Output safety" [
        test "--force on the parent of the inputs is refused; inputs and the user's file intact" {
            let zc = fresh "zc"
            let _, es = zoo.Value
            copyDir es[0] (Path.Combine(zc, "expert_1"))
            copyDir es[1] (Path.Combine(zc, "expert_2"))
            File.WriteAllText(Path.Combine(zc, "notes.txt"), "mine")
            let before = snapshot zc
            let inputs = [ "--model"; Path.Combine(zc, "expert_1"); "--model"; Path.Combine(zc, "expert_2") ]
            let code, _, err = mergedsl ([ "run"; "average" ] @ inputs @ [ "--out"; zc; "--force"; "--quiet" ])
            Expect.equal code 2 $"refused: {err}"
            Expect.isTrue (oneLine err) err
            Expect.stringContains err "contains an input" err
            // The same through a symbolic link, a trailing slash and inside an input.
            let link = fresh "zc-link"
            File.CreateSymbolicLink(link, zc) |> ignore
            for out in [ link; link + "/"; zc + "/./"; Path.Combine(zc, "expert_1", "merged"); Path.Combine(zc, "expert_2", "..", "expert_1") ] do
                let code, _, err = mergedsl ([ "run"; "average" ] @ inputs @ [ "--out"; out; "--force"; "--quiet" ])
                Expect.equal code 2 $"{out} refused: {err}"
                Expect.isTrue (err.Contains "contains an input" || err.Contains "lies inside an input" || err.Contains "is also an input") err
            Expect.equal (snapshot zc) before "inputs and the user's file untouched, nothing added"
            Expect.isEmpty (beside zc) "no temporary folder or lock left"
        }

        test "--force onto a non-empty folder mergedsl did not write is refused" {
            let out = fresh "users"
            Directory.CreateDirectory(Path.Combine(out, "photos")) |> ignore
            File.WriteAllText(Path.Combine(out, "photos", "cat.txt"), "meow")
            let code, _, err = mergedsl ([ "run"; "average" ] @ twoExperts () @ [ "--out"; out; "--force"; "--quiet" ])
            Expect.equal code 2 err
            Expect.isTrue (oneLine err) err
            Expect.stringContains err "not written by mergedsl" err
            Expect.equal (File.ReadAllText(Path.Combine(out, "photos", "cat.txt"))) "meow" "intact"
            Expect.isEmpty (beside out) "nothing beside it"
        }

        test "--force replaces a previous mergedsl output atomically; a failing --force run leaves it intact" {
            let out = fresh "prev"
            let b, _ = zoo.Value
            let code, _, err = mergedsl ([ "run"; "average" ] @ twoExperts () @ [ "--out"; out; "--quiet" ])
            Expect.equal code 0 err
            Expect.isTrue (File.Exists(Path.Combine(out, OutputMarkers.Finished))) "marked as a mergedsl output"
            Expect.isFalse (File.Exists(Path.Combine(out, OutputMarkers.Unfinished))) "no unfinished marker in a finished output"
            let first = snapshot out
            // Fails during the merge (NaN/Inf in a tensor): exit 1, the old output as it was.
            let code, _, err =
                mergedsl ([ "run"; "task-arithmetic"; "--base"; b ] @ twoExperts () @ [ "--set"; "lambda=1e308"; "--out"; out; "--force"; "--quiet" ])
            Expect.equal code 1 err
            Expect.equal (snapshot out) first "old output intact after a failed --force run"
            Expect.isEmpty (beside out) "no temporary, old or lock left"
            let code, _, err =
                mergedsl ([ "run"; "task-arithmetic"; "--base"; b ] @ twoExperts () @ [ "--out"; out; "--force"; "--quiet" ])
            Expect.equal code 0 err
            let second = snapshot out
            Expect.notEqual second[Checkpoint.SingleFileName] first[Checkpoint.SingleFileName] "replaced by the new merge"
            Expect.isTrue (second.ContainsKey OutputMarkers.Finished) "still marked"
            Expect.isEmpty (beside out) "no temporary, old or lock left"
        }

        test "an output of an earlier version (mergedsl metadata, no marker file) may be replaced; one with a stray unfinished marker may not" {
            let out = fresh "legacy"
            let code, _, err = mergedsl ([ "run"; "average" ] @ twoExperts () @ [ "--out"; out; "--quiet" ])
            Expect.equal code 0 err
            File.Delete(Path.Combine(out, OutputMarkers.Finished))
            Expect.isTrue (OutputFolder.IsReplaceable out) "recognised by its safetensors metadata"
            File.WriteAllText(Path.Combine(out, OutputMarkers.Unfinished), "{}")
            Expect.isFalse (OutputFolder.IsReplaceable out) "an unfinished folder is never a finished output"
            Expect.isTrue (OutputFolder.IsReplaceable(Directory.CreateDirectory(fresh "empty").FullName)) "empty"
        }

        test "trailing slash and ./x/../x spellings behave like the plain path" {
            let out = fresh "slash"
            let code, _, err = mergedsl ([ "run"; "average" ] @ twoExperts () @ [ "--out"; out + "/"; "--quiet" ])
            Expect.equal code 0 $"absent folder with a trailing slash: {err}"
            Expect.isTrue (File.Exists(Path.Combine(out, Checkpoint.SingleFileName))) "written at the plain path"
            Expect.isEmpty (beside out) "nothing beside it"
            let name = Path.GetFileName out
            let odd = Path.Combine(Path.GetDirectoryName out, ".", name, "..", name)
            let code, _, err = mergedsl ([ "run"; "average" ] @ twoExperts () @ [ "--out"; odd; "--quiet" ])
            Expect.equal code 2 "exists: refused without --force"
            Expect.stringContains err "already exists" err
            let code, _, err = mergedsl ([ "run"; "average" ] @ twoExperts () @ [ "--out"; odd + "/"; "--force"; "--quiet" ])
            Expect.equal code 0 $"replaced through the odd spelling: {err}"
            Expect.isEmpty (beside out) "nothing beside it"
            let nested = Path.Combine(fresh "absent-parent", "a", "b")
            let code, _, _ = mergedsl ([ "run"; "average"; "--model"; "/nonexistent/x" ] @ [ "--out"; nested + "/"; "--quiet" ])
            Expect.equal code 2 "bad input"
            Expect.isFalse (Directory.Exists(Path.GetDirectoryName(Path.GetDirectoryName nested))) "no parent folders left behind"
        }

        test "a second run to a locked output fails at once with one line; the lock goes with its holder" {
            let out = fresh "locked"
            do
                use held = OutputFolder.Reserve(out, false)
                let clock = Stopwatch.StartNew()
                let code, _, err = mergedsl ([ "run"; "average" ] @ twoExperts () @ [ "--out"; out; "--quiet" ])
                clock.Stop()
                Expect.equal code 1 err
                Expect.isTrue (oneLine err) err
                Expect.stringContains err "another mergedsl run is writing this output" err
                Expect.isLessThan clock.Elapsed.TotalSeconds 10.0 "at once"
                Expect.isFalse (Directory.Exists out) "nothing written"
                Expect.throwsT<OutputLockedException> (fun () -> OutputFolder.Reserve(out + "/.", false).Dispose()) "any spelling"
            let code, _, err = mergedsl ([ "run"; "average" ] @ twoExperts () @ [ "--out"; out; "--quiet" ])
            Expect.equal code 0 $"free again: {err}"
            Expect.isEmpty (beside out) "the lock file is removed with the lock"
        }

        test "a lock held by a process killed with SIGKILL is free at once" {
            let out = fresh "killed"
            // flock(1) takes the same kind of lock as .NET's FileShare.None on Linux; -o keeps it out of `sleep`, so
            // the lock lives exactly as long as the killed process.
            if File.Exists "/usr/bin/flock" then
                use p = Process.Start(ProcessStartInfo("/usr/bin/flock", [ "-n"; "-o"; OutputLock.LockFileOf out; "sleep"; "60" ], UseShellExecute = false))
                let deadline = DateTime.UtcNow.AddSeconds 10.0
                while not (File.Exists(OutputLock.LockFileOf out)) && DateTime.UtcNow < deadline do Threading.Thread.Sleep 20
                Threading.Thread.Sleep 200
                Expect.throwsT<OutputLockedException> (fun () -> OutputFolder.Reserve(out, false).Dispose()) "held by the child"
                p.Kill true
                p.WaitForExit()
                use r = OutputFolder.Reserve(out, false)
                Expect.equal r.Target (RealPath.Resolve out) "taken after the kill"
            else skiptest "no flock(1)"
        }

        test "the next run removes temporary folders of dead runs, and nothing else" {
            let out = fresh "stale"
            let pid, start = deadProcess ()
            let dead = out + ".tmp-dead0001"
            markFolder dead pid start
            File.WriteAllBytes(Path.Combine(dead, "model.safetensors"), Array.zeroCreate 100_000)
            let recycled = out + ".tmp-recycle1"
            // A live pid with another start time: the pid was reused, the owner is gone.
            markFolder recycled Environment.ProcessId (DateTime.UtcNow.AddDays -3.0)
            let deadOld = out + ".old-dead0002"
            markFolder deadOld pid start
            let unmarked = out + ".tmp-usersown"
            Directory.CreateDirectory unmarked |> ignore
            File.WriteAllText(Path.Combine(unmarked, "keep.txt"), "mine")
            let code, _, err = mergedsl ([ "run"; "average" ] @ twoExperts () @ [ "--out"; out; "--quiet" ])
            Expect.equal code 0 err
            Expect.isFalse (Directory.Exists dead) "dead run's temporary folder removed"
            Expect.isFalse (Directory.Exists recycled) "recycled pid's folder removed"
            Expect.isFalse (Directory.Exists deadOld) "dead run's old folder removed"
            Expect.equal (File.ReadAllText(Path.Combine(unmarked, "keep.txt"))) "mine" "a folder without the marker is never touched"
            Directory.Delete(unmarked, true)
        }

        test "a temporary folder of a live owner is left alone" {
            let out = fresh "live"
            let live = out + ".tmp-live0001"
            let me = UnfinishedMarker.ForCurrentProcess()
            markFolder live me.Pid me.ProcessStart
            Expect.isTrue (UnfinishedMarker.TryRead(live).OwnerAlive()) "this process is alive"
            let code, _, err = mergedsl ([ "run"; "average" ] @ twoExperts () @ [ "--out"; out; "--quiet" ])
            Expect.equal code 0 err
            Expect.isTrue (File.Exists(Path.Combine(live, OutputMarkers.Unfinished))) "left alone"
            Directory.Delete(live, true)
        }

        test "upscale --overwrite: same rules (input parent refused, locked output refused)" {
            let _, _, _, baseDir, e0, e1, _, _ = MoeCliTests.onDisk.Value
            let parent = Path.GetDirectoryName baseDir
            let code, _, err = mergedsl [ "upscale"; "wemoe"; "--base"; baseDir; "--model"; e0; "--model"; e1; "--out"; parent; "--overwrite" ]
            Expect.equal code 2 err
            Expect.stringContains err "contains an input" err
            Expect.isTrue (Directory.Exists baseDir && Directory.Exists e0) "inputs intact"
            let out = fresh "up-locked"
            use _held = OutputFolder.Reserve(out, false)
            let code, _, err = mergedsl [ "upscale"; "wemoe"; "--base"; baseDir; "--model"; e0; "--model"; e1; "--out"; out ]
            Expect.equal code 1 err
            Expect.stringContains err "another mergedsl run" err
        }
    ]

/// An upscaled WEMoE model of the MoE CLI fixture.
let private upscaled =
    lazy
        (let _, _, _, baseDir, e0, e1, _, _ = MoeCliTests.onDisk.Value
         let up = fresh "wemoe"
         let code, _, err = mergedsl [ "upscale"; "wemoe"; "--base"; baseDir; "--model"; e0; "--model"; e1; "--out"; up; "--set"; "router-depth=1" ]
         if code <> 0 then failwith err
         up)

/// A copy of the fixture's data folder with one file replaced or added.
let private dataWith (task: string) (images: torch.Tensor) =
    let _, _, _, _, _, _, data, _ = MoeCliTests.onDisk.Value
    let d = fresh "data"
    copyDir data d
    TaskDataFolder.Save(Path.Combine(d, task + ".safetensors"), images, torch.randint(0L, 3L, [| images.shape[0] |]))
    d

let private expectRefused (args: string list) (culprit: string) (out: string) =
    let code, _, err = mergedsl args
    Expect.equal code 2 $"usage error: {err}"
    Expect.isTrue (oneLine err) err
    Expect.stringContains err culprit "names the culprit"
    Expect.isFalse (Directory.Exists out) "nothing at --out"
    Expect.isEmpty (beside out) "no temporary folder or lock"

[<Tests>]
let adaptTests =
    testSequenced <| testList "Adapt and eval safety" [
        test "adapt refuses NaN, huge and zero learning rates, bad steps and a batch that cannot fit, before any work" {
            let up = upscaled.Value
            let _, _, _, _, _, _, data, _ = MoeCliTests.onDisk.Value
            let out = fresh "adapt-bad"
            for lr in [ "NaN"; "1e30"; "0"; "-1"; "Infinity" ] do
                expectRefused [ "adapt"; up; "--data"; data; "--lr"; lr; "--steps"; "2"; "--out"; out; "--quiet" ] "--lr" out
            expectRefused [ "adapt"; up; "--data"; data; "--steps"; "-1"; "--out"; out; "--quiet" ] "--steps" out
            expectRefused [ "adapt"; up; "--data"; data; "--steps"; "2"; "--batch"; "2000000000"; "--out"; out; "--quiet" ] "--batch 2000000000: does not fit in memory" out
            let code, _, err = mergedsl [ "adapt"; up; "--data"; data; "--steps"; "2"; "--batch"; "2000000000"; "--out"; out; "--quiet" ]
            Expect.stringContains err "allows at most" $"the bound is in the message: {err}"
            expectRefused [ "eval"; up; "--data"; data; "--batch"; "2000000000" ] "--batch 2000000000: does not fit in memory" out
        }

        test "the memory bound scales with the model and the tasks" {
            let small = ClipVisionConfig(HiddenSize = 32, IntermediateSize = 64, NumHiddenLayers = 2, NumAttentionHeads = 4, ImageSize = 16, PatchSize = 4, ProjectionDim = 8)
            let b32 = ClipVisionConfig()
            let perSmall = MergeDsl.Core.Adaptation.AdaptInputs.BytesPerSample(small, 2, true)
            let perB32 = MergeDsl.Core.Adaptation.AdaptInputs.BytesPerSample(b32, 12, true)
            Expect.isGreaterThan perB32 (100L * perSmall) "ViT-B/32 needs far more per image"
            Expect.isLessThan (MergeDsl.Core.Adaptation.AdaptInputs.BytesPerSample(b32, 12, false)) perB32 "inference needs less"
            let gib = 1L <<< 30
            let oneTask = MergeDsl.Core.Adaptation.AdaptInputs.MaxBatch(perB32, 1, 22L * gib)
            let eight = MergeDsl.Core.Adaptation.AdaptInputs.MaxBatch(perB32, 8, 22L * gib)
            Expect.isTrue (eight <= oneTask / 8L + 1L) "per task share"
            Expect.isLessThan oneTask 100_000L "the issue's --batch 100000 on ViT-B/32 is refused"
        }

        test "adapt whose training goes non-finite stops with one line and writes nothing" {
            let up = upscaled.Value
            let _, _, _, _, _, _, data, _ = MoeCliTests.onDisk.Value
            let broken = fresh "wemoe-nan-head"
            copyDir up broken
            File.Delete(Path.Combine(broken, OutputMarkers.Finished))
            use head = new ClassificationHead("taskA", torch.ones([| 3L; 8L |]).mul(torch.tensor Single.NaN), 20.0f)
            ClipModelFolder.SaveHead(Path.Combine(broken, ClipModelFolder.HeadsFolder, "taskA.safetensors"), head)
            let out = fresh "adapt-nan"
            let code, _, err = mergedsl [ "adapt"; broken; "--data"; data; "--steps"; "3"; "--batch"; "4"; "--out"; out; "--quiet" ]
            Expect.equal code 1 $"a failure during the work: {err}"
            Expect.isTrue (oneLine err) err
            Expect.stringContains err "NaN" err
            Expect.isFalse (err.Contains "JSON") "not a serializer message"
            Expect.isFalse (Directory.Exists out) "nothing at --out"
            Expect.isEmpty (beside out) "no temporary folder or lock"
        }

        test "training that goes non-finite raises the typed NonFiniteException (NaN heads, overflowing activations)" {
            let cfg = ClipTests.tinyConfig "quick_gelu"
            let b, experts = WemoeTests.zoo cfg 61L 2
            let moe = WemoeTests.upscale cfg b experts (MergeDsl.Core.Moe.UpscaleSpec())
            use _m = moe.Model
            let nanHeads =
                readOnlyDict [ for t in [ "a"; "b" ] -> t, new ClassificationHead(t, torch.ones([| 4L; 8L |]).mul(torch.tensor Single.NaN), 5.0f) ]
            let data = AdaptTests.tinyTasks 63L
            let options = MergeDsl.Core.Adaptation.AdaptOptions(Steps = 3, BatchPerTask = 4)
            Expect.throwsT<MergeDsl.Core.Adaptation.NonFiniteException>
                (fun () -> MergeDsl.Core.Adaptation.RouterAdaptation.Run(moe, nanHeads, data, null, options) |> ignore) "typed"
            // Finite images so large that the activations overflow: the same stop, from the objective.
            let huge = [ for t in [ "a"; "b" ] -> new TaskData(t, torch.ones([| 8L; 3L; 8L; 8L |]).mul(torch.tensor 3e38f), null) ]
            Expect.throwsT<MergeDsl.Core.Adaptation.NonFiniteException>
                (fun () -> MergeDsl.Core.Adaptation.RouterAdaptation.Run(moe, AdaptTests.tinyHeads 64L, huge, null, options) |> ignore) "overflow"
        }

        test "NaN images and images of the wrong size are refused before training" {
            let up = upscaled.Value
            let out = fresh "adapt-nan-images"
            let nanImages = torch.ones([| 8L; 3L; 8L; 8L |]).mul(torch.tensor Single.NaN)
            let data = dataWith "taskA" nanImages
            expectRefused [ "adapt"; up; "--data"; data; "--steps"; "2"; "--batch"; "4"; "--out"; out; "--quiet" ] "taskA.safetensors: images contain NaN or Inf" out
            expectRefused [ "eval"; up; "--data"; data ] "taskA.safetensors: images contain NaN or Inf" out
            let wrong = dataWith "taskB" (torch.rand([| 8L; 3L; 12L; 12L |]))
            expectRefused [ "adapt"; up; "--data"; wrong; "--steps"; "2"; "--batch"; "4"; "--out"; out; "--quiet" ] "taskB.safetensors: images are [8, 3, 12, 12]" out
        }

        test "a data task without a head is refused by adapt and eval alike, naming the task" {
            let up = upscaled.Value
            let out = fresh "adapt-headless"
            let data = dataWith "taskC" (torch.rand([| 8L; 3L; 8L; 8L |]))
            expectRefused [ "adapt"; up; "--data"; data; "--steps"; "2"; "--batch"; "4"; "--out"; out; "--quiet" ] "no head for task(s) taskC" out
            expectRefused [ "eval"; up; "--data"; data ] "no head for task(s) taskC" out
        }

        test "adapt and eval keep their outputs away from their inputs; adapt writes its log atomically with the model" {
            let up = upscaled.Value
            let _, _, _, _, _, _, data, _ = MoeCliTests.onDisk.Value
            let code, _, err = mergedsl [ "adapt"; up; "--data"; data; "--steps"; "1"; "--batch"; "2"; "--out"; Path.Combine(data, "adapted"); "--quiet" ]
            Expect.equal code 2 err
            Expect.stringContains err "lies inside an input (--data" err
            let code, _, err = mergedsl [ "adapt"; up; "--data"; data; "--steps"; "1"; "--batch"; "2"; "--out"; up; "--overwrite"; "--quiet" ]
            Expect.equal code 2 err
            Expect.stringContains err "is also an input (MODEL" err
            let code, _, err = mergedsl [ "eval"; up; "--data"; data; "--json"; Path.Combine(data, "report.json") ]
            Expect.equal code 2 err
            Expect.stringContains err "--json" err
            Expect.isFalse (File.Exists(Path.Combine(data, "report.json"))) "nothing written into the data"
            let out = fresh "adapted"
            let code, _, err = mergedsl [ "adapt"; up; "--data"; data; "--steps"; "2"; "--batch"; "2"; "--out"; out; "--quiet" ]
            Expect.equal code 0 err
            Expect.isTrue (File.Exists(Path.Combine(out, "adapt_log.json"))) "log inside"
            Expect.isTrue (File.Exists(Path.Combine(out, OutputMarkers.Finished))) "a mergedsl output"
            let code, _, err = mergedsl [ "adapt"; up; "--data"; data; "--steps"; "2"; "--batch"; "2"; "--out"; out; "--overwrite"; "--quiet" ]
            Expect.equal code 0 $"--overwrite replaces its own output: {err}"
            Expect.isEmpty (beside out) "nothing beside it"
        }
    ]
