/// Zero-copy versus copying loads. Skipped unless MERGEDSL_BENCH=1 (it writes a 256 MB file):
///   MERGEDSL_BENCH=1 dotnet run --project tests/MergeDsl.Tests -c Release -- --filter-test-list "Checkpoint load benchmark"
module MergeDsl.Tests.CheckpointBench

open System
open System.Diagnostics
open Expecto
open TorchSharp
open MergeDsl.Core.Checkpoints
open MergeDsl.Tests.CheckpointFixtures

let private median (xs: float list) = (List.sort xs)[xs.Length / 2]

[<Tests>]
let tests =
    testSequenced <| testList "Checkpoint load benchmark" [
        test "256 MB f32: load + sum, zero-copy view vs one memcpy" {
            if Environment.GetEnvironmentVariable "MERGEDSL_BENCH" <> "1" then skiptest "set MERGEDSL_BENCH=1 to run"
            use dir = new TempDir()
            let target = dir.File "big"
            let elements = 64L * 1024L * 1024L
            do
                use _ = torch.NewDisposeScope()
                CheckpointWriter.WriteAll(target, readOnlyDict [ "w", torch.rand([| elements |]) ], CheckpointWriterOptions())
            let runs = 7
            let measure zeroCopy =
                [ for _ in 1..runs do
                    GC.Collect()
                    use _ = torch.NewDisposeScope()
                    let sw = Stopwatch.StartNew()
                    use cp = Checkpoint.Open(target, zeroCopy = zeroCopy)
                    let t = cp.Load "w"
                    let loaded = sw.Elapsed.TotalMilliseconds
                    let s = t.sum().item<float32> ()
                    let total = sw.Elapsed.TotalMilliseconds
                    Expect.isGreaterThan s 0.0f "sum"
                    yield loaded, total ]
            // One untimed pass of each warms the page cache, so both read the same cached file.
            measure true |> ignore
            measure false |> ignore
            let zc = measure true
            let cp = measure false
            let report name (xs: (float * float) list) =
                printfn "%-10s load %7.1f ms   load+sum %7.1f ms   (median of %d, warm page cache)" name (median (List.map fst xs)) (median (List.map snd xs)) runs
            report "zero-copy" zc
            report "copy" cp
            // The sum alone, over an ordinary in-memory tensor, for reference.
            use _ = torch.NewDisposeScope()
            let mem = torch.rand([| elements |])
            let sums = [ for _ in 1..runs -> (let sw = Stopwatch.StartNew() in mem.sum().item<float32> () |> ignore; sw.Elapsed.TotalMilliseconds) ]
            printfn "%-10s sum  %7.1f ms" "in-memory" (median sums)
        }
    ]
