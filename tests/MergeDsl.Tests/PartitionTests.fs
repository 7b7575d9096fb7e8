/// Partitioned merges (plan --parts, run --part/--stats, finalize), --resume after a kill, and --max-memory: every
/// result compared byte for byte with the same merge run once on one machine.
module MergeDsl.Tests.PartitionTests

open System
open System.Diagnostics
open System.IO
open System.Text.Json
open Expecto
open TorchSharp
open MergeDsl.Core.Checkpoints
open MergeDsl.Core.Partitioning
open MergeDsl.Tests.CliTests

let private root =
    lazy
        (let d = Directory.CreateTempSubdirectory("mergedsl-partition-tests-").FullName
         AppDomain.CurrentDomain.ProcessExit.Add(fun _ -> try Directory.Delete(d, true) with _ -> ())
         d)

let private fresh (name: string) = Path.Combine(root.Value, name + "-" + Guid.NewGuid().ToString("N").Substring(0, 8))

let private oneLine (err: string) = err.Trim().Split('\n').Length = 1

/// Every file under a folder (relative path -> bytes), except the finished marker, which records the time of writing.
let private files (dir: string) =
    Directory.GetFiles(dir, "*", SearchOption.AllDirectories)
    |> Array.map (fun f -> Path.GetRelativePath(dir, f), f)
    |> Array.filter (fun (rel, _) -> rel <> OutputMarkers.Finished)
    |> Array.map (fun (rel, f) -> rel, File.ReadAllBytes f)
    |> Map.ofArray

let private expectSameBytes (expected: string) (actual: string) =
    let e, a = files expected, files actual
    Expect.sequenceEqual (Map.keys a |> Seq.sort) (Map.keys e |> Seq.sort) "the same files"
    Expect.isTrue (e |> Map.exists (fun k _ -> k = Checkpoint.IndexFileName)) "the output is sharded (has an index)"
    for KeyValue(name, bytes) in e do
        Expect.isTrue (a[name].AsSpan().SequenceEqual(ReadOnlySpan bytes)) $"{name}: the same bytes"

/// Names beside `target` that start with its name and a dot (temporary folders, parts, lock).
let private beside (target: string) =
    let name = Path.GetFileName target
    Directory.GetFileSystemEntries(Path.GetDirectoryName target)
    |> Array.map Path.GetFileName
    |> Array.filter (fun n -> n.StartsWith(name + ".") && n <> name + ".lock")
    |> List.ofArray

let private zooArgs () =
    let b, es = zoo.Value
    [ "--base"; b ] @ (es |> List.collect (fun e -> [ "--model"; e ]))

/// A base of zeros and two experts of small integers: global top-k thresholds land on values many entries share, so
/// which tensors keep the ties depends on the order, and the parts must keep exactly the ones a whole run keeps.
let private tiedModels =
    lazy
        (let folder = fresh "tied"
         let write name (f: int -> torch.Tensor) =
             let dir = Path.Combine(folder, name)
             writeModel dir [ for i in 0..11 -> $"layers.{i:D2}.weight", f i ]
             dir
         let gen = new torch.Generator(7UL)
         let b = write "base" (fun _ -> torch.zeros([| 8L; 5L |]))
         let e1 = write "e1" (fun _ -> torch.randint(-3L, 4L, [| 8L; 5L |], generator = gen).to_type(torch.float32))
         let e2 = write "e2" (fun _ -> torch.randint(-3L, 4L, [| 8L; 5L |], generator = gen).to_type(torch.float32))
         [ "--base"; b; "--model"; e1; "--model"; e2 ])

/// Runs a merge into `out`, then moves it to `reference` (so that the parts' command line, with the same --out, records
/// the same model card).
let private referenceRun (args: string list) (out: string) =
    let code, _, err = mergedsl ([ "run" ] @ args @ [ "--out"; out; "-q" ])
    Expect.equal code 0 $"single-machine run: {err}"
    let reference = out + "-reference"
    Directory.Move(out, reference)
    reference

/// The CLI's apphost, for tests that need separate processes (kills).
let private cliPath () =
    Path.Combine(Path.GetDirectoryName(typeof<MergeDsl.Cli.Jobs.MergeJob.Request>.Assembly.Location), "MergeDsl.Cli")

/// Starts `mergedsl args` as a process; `hold` makes it stop (and wait to be killed) after that many finished shards.
let private start (args: string list) (hold: int option) =
    let psi = ProcessStartInfo(cliPath ())
    for a in args do psi.ArgumentList.Add a
    psi.RedirectStandardOutput <- true
    psi.RedirectStandardError <- true
    psi.UseShellExecute <- false
    hold |> Option.iter (fun k -> psi.Environment["MERGEDSL_FAULT_HOLD_AFTER_SHARDS"] <- string k)
    Process.Start psi

/// Runs `mergedsl args` in its own process to the end: exit code, stdout, stderr.
let private runProcess (args: string list) =
    use p = start args None
    let err = p.StandardError.ReadToEndAsync()
    let out = p.StandardOutput.ReadToEnd()
    p.WaitForExit()
    p.ExitCode, out, err.Result

/// Starts a run that holds after `shards` finished shards, waits until it says so, and kills it with SIGKILL.
let private killAfter (args: string list) (shards: int) =
    use p = start args (Some shards)
    let out = p.StandardOutput.ReadToEndAsync()
    let mutable line = p.StandardError.ReadLine()
    let mutable seen = []
    while not (isNull line) && not (line.Contains "MERGEDSL_FAULT_HOLD_AFTER_SHARDS") do
        seen <- line :: seen
        line <- p.StandardError.ReadLine()
    Expect.isNotNull line $"the run reached its hold point (stderr: {String.Join(' ', List.rev seen)})"
    p.Kill() // SIGKILL on Unix: no cleanup runs
    p.WaitForExit()
    out.Wait()

[<Tests>]
let tests =
    testSequenced <| testList "partition" [
        test "the partition puts every shard in exactly one part and balances bytes read + computed" {
            let code, out, err = mergedsl ([ "plan"; "ties"; "--shard-size"; "20KB"; "--parts"; "3"; "--json" ] @ zooArgs ())
            Expect.equal code 0 err
            use doc = JsonDocument.Parse out
            let p = doc.RootElement.GetProperty("partition").GetProperty("partition")
            let shards = p.GetProperty("shards").EnumerateArray() |> Seq.map (fun s -> s.GetProperty("index").GetInt32(), s.GetProperty("bytesRead").GetInt64() + s.GetProperty("bytesComputed").GetInt64()) |> Map.ofSeq
            let parts = p.GetProperty("parts").EnumerateArray() |> Seq.map (fun x -> [ for s in x.GetProperty("shards").EnumerateArray() -> s.GetInt32() ]) |> List.ofSeq
            Expect.equal parts.Length 3 "three parts"
            Expect.sequenceEqual (List.concat parts |> List.sort) (Map.keys shards |> List.ofSeq) "every shard once"
            let costs = parts |> List.map (List.sumBy (fun s -> shards[s]))
            let largestShard = shards |> Map.values |> Seq.max
            // Longest-processing-time-first: no part exceeds the mean by more than one shard.
            Expect.isLessThanOrEqual (List.max costs) (List.sum costs / 3L + largestShard) "balanced within one shard"
            Expect.isGreaterThan (List.min costs) 0L "no part is empty"
        }

        test "plan --parts refuses more parts than shards, naming --parts" {
            let code, _, err = mergedsl ([ "plan"; "ties"; "--parts"; "4" ] @ zooArgs ())
            Expect.equal code 2 err
            Expect.isTrue (oneLine err && err.Contains "--parts" && err.Contains "shard") err
        }

        test "three parts + finalize give the bytes of one run (per-tensor TIES, every file incl. the index)" {
            let out = fresh "ties"
            let args = [ "ties"; "--shard-size"; "20KB" ] @ zooArgs ()
            let reference = referenceRun args out
            for i in [ 2; 0; 1 ] do
                let code, _, err = mergedsl ([ "run" ] @ args @ [ "--out"; out; "--part"; $"{i}/3"; "-q" ])
                Expect.equal code 0 err
            let manifest = JsonDocument.Parse(File.ReadAllText(Path.Combine(PartFolders.PartFolder(out, 1, 3), PartManifest.FileName)))
            let shards = manifest.RootElement.GetProperty("shards")
            Expect.isGreaterThan (shards.GetArrayLength()) 0 "part 1 wrote shards"
            for s in shards.EnumerateArray() do
                Expect.equal (s.GetProperty("sha256").GetString().Length) 64 "a sha256 per shard"
            let code, _, err = mergedsl [ "finalize"; out; "-q" ]
            Expect.equal code 0 err
            expectSameBytes reference out
            Expect.isFalse (Directory.Exists(PartFolders.PartsFolder out)) "OUT.parts removed"
            Expect.isEmpty (beside out) "no debris beside the output"
        }

        test "global TIES: the statistics step, then parts that split ties across them, equal one run" {
            let out = fresh "global"
            let args = [ "ties"; "--set"; "scope=global"; "--set"; "density=0.3"; "--shard-size"; "200B" ] @ tiedModels.Value
            let reference = referenceRun args out
            let code, _, err = mergedsl ([ "run" ] @ args @ [ "--out"; out; "--part"; "0/4"; "-q" ])
            Expect.equal code 1 "a part before the statistics step fails"
            Expect.isTrue (oneLine err && err.Contains "stats.json" && err.Contains "--stats") err
            let code, _, err = mergedsl ([ "run" ] @ args @ [ "--out"; out; "--stats"; "-q" ])
            Expect.equal code 0 err
            use stats = JsonDocument.Parse(File.ReadAllText(PartFolders.StatisticsFile out))
            let partial =
                stats.RootElement.GetProperty("thresholds").EnumerateArray()
                |> Seq.exists (fun t -> let q = t.GetProperty("tieQuota").GetInt64() in q > 0L && q < t.GetProperty("equal").GetInt64())
            Expect.isTrue partial "some threshold keeps only part of its ties (the order matters)"
            for i in [ 3; 1; 0; 2 ] do
                let code, _, err = mergedsl ([ "run" ] @ args @ [ "--out"; out; "--part"; $"{i}/4"; "-q" ])
                Expect.equal code 0 err
            let code, _, err = mergedsl [ "finalize"; out; "-q" ]
            Expect.equal code 0 err
            expectSameBytes reference out
        }

        test "finalize names a missing part and a part from other inputs, and writes nothing" {
            let out = fresh "missing"
            let args = [ "ties"; "--shard-size"; "20KB" ] @ zooArgs ()
            for i in [ 0; 2 ] do
                let code, _, err = mergedsl ([ "run" ] @ args @ [ "--out"; out; "--part"; $"{i}/3"; "-q" ])
                Expect.equal code 0 err
            let code, _, err = mergedsl [ "finalize"; out ]
            Expect.equal code 1 err
            Expect.isTrue (oneLine err && err.Contains "part 1 of 3" && err.Contains "missing") err
            Expect.isFalse (Directory.Exists out) "nothing at OUT"
            let code, _, err = mergedsl ([ "run" ] @ args @ [ "--set"; "density=0.5"; "--out"; out; "--part"; "1/3"; "-q" ])
            Expect.equal code 0 err
            let code, _, err = mergedsl [ "finalize"; out ]
            Expect.equal code 1 err
            Expect.isTrue (oneLine err && err.Contains "part 1 of 3" && err.Contains "another plan") err
            Expect.isFalse (Directory.Exists out) "nothing at OUT"
            // A damaged shard is caught by its hash.
            let code, _, err = mergedsl ([ "run" ] @ args @ [ "--out"; out; "--part"; "1/3"; "-q" ])
            Expect.equal code 0 err
            let part2 = PartFolders.PartFolder(out, 2, 3)
            let shard = Directory.GetFiles(part2, "*.safetensors") |> Array.head
            let bytes = File.ReadAllBytes shard
            bytes[bytes.Length - 1] <- bytes[bytes.Length - 1] ^^^ 1uy
            File.WriteAllBytes(shard, bytes)
            let code, _, err = mergedsl [ "finalize"; out ]
            Expect.equal code 1 err
            Expect.isTrue (oneLine err && err.Contains "part 2 of 3" && err.Contains "sha256") err
            Expect.isFalse (Directory.Exists out) "nothing at OUT"
        }

        test "--part auto/N reads SLURM_ARRAY_TASK_ID or JOB_COMPLETION_INDEX" {
            let out = fresh "auto"
            let args = [ "run"; "ties"; "--shard-size"; "20KB" ] @ zooArgs () @ [ "--out"; out; "--part"; "auto/3"; "-q" ]
            let code, _, err = mergedsl args
            Expect.equal code 2 "no index given"
            Expect.isTrue (oneLine err && err.Contains "SLURM_ARRAY_TASK_ID") err
            try
                Environment.SetEnvironmentVariable("JOB_COMPLETION_INDEX", "2")
                let code, _, err = mergedsl args
                Expect.equal code 0 err
                Expect.isTrue (Directory.Exists(PartFolders.PartFolder(out, 2, 3))) "part 2 written"
                Environment.SetEnvironmentVariable("SLURM_ARRAY_TASK_ID", "3")
                let code, _, err = mergedsl args
                Expect.equal code 2 "index 3 of 3 is out of range"
                Expect.isTrue (oneLine err && err.Contains "0 to 2") err
            finally
                Environment.SetEnvironmentVariable("JOB_COMPLETION_INDEX", null)
                Environment.SetEnvironmentVariable("SLURM_ARRAY_TASK_ID", null)
        }

        test "a simulated cluster: 4 worker processes, one killed with SIGKILL and rerun, then finalize equals one run" {
            let out = fresh "cluster"
            let args = [ "run"; "ties"; "--shard-size"; "8KB" ] @ zooArgs () @ [ "--out"; out; "-q" ]
            let code, _, err = runProcess args
            Expect.equal code 0 err
            let reference = out + "-reference"
            Directory.Move(out, reference)
            let workers = [ for i in [ 0; 1; 3 ] -> start (args @ [ "--part"; $"{i}/4" ]) None ]
            killAfter (args @ [ "--part"; "2/4" ]) 1
            for w in workers do
                let err = w.StandardError.ReadToEnd()
                w.WaitForExit()
                Expect.equal w.ExitCode 0 err
                w.Dispose()
            Expect.isFalse (Directory.Exists(PartFolders.PartFolder(out, 2, 4))) "the killed part left no finished folder"
            let code, _, err = mergedsl [ "finalize"; out ]
            Expect.equal code 1 "finalize refuses while part 2 is missing"
            Expect.isTrue (err.Contains "part 2 of 4") err
            let code, _, err = runProcess (args @ [ "--part"; "2/4" ])
            Expect.equal code 0 err
            Expect.isEmpty (Directory.GetDirectories(PartFolders.PartsFolder out, "part-2-of-4.tmp-*")) "the rerun removed the killed run's temporary folder"
            let code, _, err = mergedsl [ "finalize"; out; "-q" ]
            Expect.equal code 0 err
            expectSameBytes reference out
            Expect.isEmpty (beside out) "no debris"
        }

        test "--resume after kill -9 keeps the verified shards, computes only the rest, and equals one run" {
            let out = fresh "resume"
            let args = [ "run"; "ties"; "--shard-size"; "8KB" ] @ zooArgs () @ [ "--out"; out ]
            let code, _, err = runProcess (args @ [ "-q" ])
            Expect.equal code 0 err
            let reference = out + "-reference"
            Directory.Move(out, reference)
            killAfter args 3
            Expect.isFalse (Directory.Exists out) "nothing at OUT after the kill"
            Expect.equal (beside out |> List.filter (fun n -> n.Contains ".tmp-")).Length 1 "the killed run's temporary folder"
            let code, stdout, err = runProcess (args @ [ "--resume"; "--json" ])
            Expect.equal code 0 err
            use doc = JsonDocument.Parse stdout
            Expect.equal (doc.RootElement.GetProperty("resumedShards").GetInt32()) 3 "the three finished shards were kept"
            let skipped = doc.RootElement.GetProperty("tensorsSkipped").GetInt32()
            Expect.isGreaterThan skipped 0 "their tensors were not computed again"
            Expect.isLessThan skipped (doc.RootElement.GetProperty("tensors").GetInt32() + skipped) "the rest was computed"
            expectSameBytes reference out
            Expect.isEmpty (beside out) "no debris (temporary folder adopted and committed)"
        }

        test "without --resume a new run removes a killed run's temporary folder" {
            let out = fresh "noresume"
            let args = [ "run"; "ties"; "--shard-size"; "8KB" ] @ zooArgs () @ [ "--out"; out ]
            killAfter args 1
            Expect.equal (beside out).Length 1 "one temporary folder left by the kill"
            let code, stdout, err = runProcess (args @ [ "--json" ])
            Expect.equal code 0 err
            use doc = JsonDocument.Parse stdout
            Expect.equal (doc.RootElement.GetProperty("resumedShards").GetInt32()) 0 "nothing resumed"
            Expect.isEmpty (beside out) "the dead run's folder is gone"
        }

        test "--max-memory too small for the largest tensor fails at plan time, naming it; a modest cap gives the same bytes" {
            let code, _, err = mergedsl ([ "plan"; "ties"; "--max-memory"; "10KB" ] @ zooArgs ())
            Expect.equal code 2 err
            Expect.isTrue (oneLine err && err.Contains "--max-memory" && err.Contains "needs") err
            let code, _, err = mergedsl ([ "run"; "ties"; "--max-memory"; "10KB"; "--out"; fresh "never" ] @ zooArgs ())
            Expect.equal code 2 err
            let out = fresh "capped"
            let args = [ "ties"; "--shard-size"; "20KB" ] @ zooArgs ()
            let reference = referenceRun args out
            let code, _, err = mergedsl ([ "run" ] @ args @ [ "--out"; out; "--max-memory"; "1MB"; "-q" ])
            Expect.equal code 0 err
            expectSameBytes reference out
        }
    ]
