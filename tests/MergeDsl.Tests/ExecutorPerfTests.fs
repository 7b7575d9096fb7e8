/// The executor's fast paths (radix top-k, vectorised finite scan, chunked evaluation, output buffer
/// reuse, dropping released mapped pages) against their plain definitions.
module MergeDsl.Tests.ExecutorPerfTests

open System
open Expecto
open FsCheck
open TorchSharp
open MergeDsl.Core.Checkpoints
open MergeDsl.Core.Execution
open MergeDsl.Core.Ops
open MergeDsl
open MergeDsl.Tests.AlgebraSupport
open MergeDsl.Tests.CheckpointFixtures

/// Values with many exact ties (and ±0) in magnitude, sometimes a NaN or ±Inf.
let private tieHeavy (rng: Random) (n: int) (special: bool) =
    Array.init n (fun _ ->
        match rng.Next 40 with
        | 0 when special -> Single.NaN
        | 1 when special -> Single.PositiveInfinity
        | 2 when special -> Single.NegativeInfinity
        | 3 -> -0.0f
        | _ -> float32 (rng.Next(-6, 7)) / 4.0f)

/// TopK by its definition: the sort-based mask (descending |x|, lower index first), zeros elsewhere.
let private topKBySort (x: torch.Tensor) (density: float) =
    use mask = MergeOps.TopKMaskBySort(x, density)
    use z = torch.zeros_like x
    use r = torch.where(mask, x, z)
    values r

let private bitsOf (xs: float32[]) = xs |> Array.map BitConverter.SingleToInt32Bits

let private asType (t: torch.ScalarType) (xs: float32[]) =
    use f = torch.tensor xs
    f.``to``(t)

[<Tests>]
let tests =
    testList "Executor fast paths" [
        testProperty "TopK (radix select, in place, kthvalue mask) equals the sort-based definition, ties to the lower index"
            (fun (seed: int) (PositiveInt len) (densityPct: byte) (special: bool) ->
                let rng = Random seed
                let n = 1 + len % 300
                let density = float (int densityPct % 101) / 100.0
                let xs = tieHeavy rng n special
                use x = torch.tensor xs
                let expected = topKBySort x density
                use fast = MergeOps.TopK(x, density)
                use inPlace = x.clone()
                let applied = MergeOps.TryTopKInPlace(inPlace, density)
                use mask = MergeOps.TopKMask(x, density)
                use maskRef = MergeOps.TopKMaskBySort(x, density)
                use x64 = x.``to``(torch.ScalarType.Float64)
                use r64 = MergeOps.TopK(x64, density)
                let sameMask = values (mask.``to``(torch.ScalarType.Float32)) = values (maskRef.``to``(torch.ScalarType.Float32))
                bitsOf (values fast) = bitsOf expected
                && (not applied || bitsOf (values inPlace) = bitsOf expected)
                && (applied || bitsOf (values inPlace) = bitsOf xs)
                && sameMask
                && bitsOf (values r64) = bitsOf expected)

        testProperty "fused sign election and disjoint mean equal their op-by-op definitions bit for bit"
            (fun (seed: int) (PositiveInt len) (special: bool) ->
                let rng = Random seed
                let n = 1 + len % 200
                let m = 1 + rng.Next 5
                let stack = List.init m (fun _ -> torch.tensor (tieHeavy rng n special))
                let elected = MergeOps.ElectSign(stack, MergeDsl.Core.Ir.SignRule.Mass)
                let electedRef = MergeOps.ElectSignOps(stack, MergeDsl.Core.Ir.SignRule.Mass)
                use mean = MergeOps.DisjointMean(stack)
                use meanRef = MergeOps.DisjointMeanOps(stack)
                let same (a: torch.Tensor) (b: torch.Tensor) = sameBits (values a) (values b)
                let ok = Array.forall2 same elected electedRef && same mean meanRef
                for t in Seq.concat [ Seq.ofArray elected; Seq.ofArray electedRef; Seq.ofList stack ] do t.Dispose()
                ok)

        test "TopK golden: exactly k kept, equal magnitudes by index, NaN ranks largest" {
            Expect.equal (values (MergeOps.TopK(vec [ 1.0; -1.0; 1.0; 0.5; -1.0 ], 0.4))) [| 1.0f; -1.0f; 0.0f; 0.0f; 0.0f |] "k = 2 of three ties"
            let r = values (MergeOps.TopK(vec [ 1.0; nan; 3.0; -2.0 ], 0.5))
            Expect.isTrue (Single.IsNaN r[1]) "NaN kept"
            Expect.equal [| r[0]; r[2]; r[3] |] [| 0.0f; 3.0f; 0.0f |] "then the largest number"
            Expect.equal (bitsOf (values (MergeOps.TopK(vec [ -0.5; 2.0 ], 0.5)))) (bitsOf [| 0.0f; 2.0f |]) "dropped entries are +0"
        }

        testProperty "finite scan agrees with isfinite for f32, f64, f16 and bf16 at every position"
            (fun (seed: int) (PositiveInt len) ->
                let rng = Random seed
                let n = len % 700
                let xs = Array.init n (fun _ -> float32 (rng.NextDouble() * 8.0 - 4.0))
                if n > 0 && rng.Next 3 > 0 then
                    xs[rng.Next n] <- (match rng.Next 3 with 0 -> Single.NaN | 1 -> Single.PositiveInfinity | _ -> Single.NegativeInfinity)
                [ torch.ScalarType.Float32; torch.ScalarType.Float64; torch.ScalarType.Float16; torch.ScalarType.BFloat16 ]
                |> List.forall (fun ty ->
                    use t = asType ty xs
                    use fin = t.isfinite().all()
                    FiniteScan.AllFinite t = Nullable(fin.item<bool> ())))

        test "finite scan: huge finite values are finite, a value overflowing f16 is not" {
            use big = asType torch.ScalarType.Float32 [| 3.0e38f; -3.0e38f; 3.0e38f |]
            Expect.equal (FiniteScan.AllFinite big) (Nullable true) "f32 max-ish values"
            use h = asType torch.ScalarType.Float16 [| 1.0f; 70000.0f |]
            Expect.equal (FiniteScan.AllFinite h) (Nullable false) "70000 is +Inf in f16"
            use i = torch.tensor [| 1L; 2L |]
            Expect.equal (FiniteScan.AllFinite i) (Nullable()) "integers: not applicable"
        }

        test "non-finite input reports the model, the count and the first index" {
            let b = model "base" [ "w", tensor [ 4L ] [ 1.0f; 2.0f; 3.0f; 4.0f ] ]
            let e = model "e" [ "w", tensor [ 4L ] [ 1.0f; Single.PositiveInfinity; 3.0f; Single.NaN ] ]
            Expect.throwsC (fun () -> run (Methods.taskArithmetic 1.0) (inputs (Some b) [ e ]) |> ignore) (fun e ->
                match e with
                | :? NonFiniteTensorException as n ->
                    Expect.equal (n.Tensor, n.Model, n.Count, n.FirstIndex) ("w", "e", 2L, 1L) "typed details"
                    Expect.stringContains n.Message "w: input model 'e' has 2 NaN/Inf values (first at flat index 1)" "message"
                | e -> failtestf "expected NonFiniteTensorException, got %O" e)
        }

        testPropertyWithConfig { FsCheckConfig.defaultConfig with maxTest = 30 } "chunked evaluation (blocks of 1 to 5 elements) is bit-identical to whole-tensor evaluation"
            (fun (seed: int) (block: byte) ->
                let rng = Random seed
                let mk label =
                    model label [ "m", tensor [ 3L; 7L ] (List.ofArray (tieHeavy rng 21 false))
                                  "v", tensor [ 9L ] (List.ofArray (tieHeavy rng 9 false)) ]
                let ins = inputs (Some (mk "base")) [ mk "e1"; mk "e2"; mk "e3" ]
                let recipes =
                    [ Methods.taskArithmetic 0.3; Methods.average; Methods.ties 0.4 1.0 PerTensor MergeMean
                      Methods.ties 0.3 0.7 Global MergeSum; Methods.dareTies 0.5 1.0 Inverse MergeMean
                      Methods.breadcrumbsTies 0.5 0.1 1.0 MergeMean; Methods.weightedAverage [ 0.2; 0.3; 0.5 ]; Methods.modelStock ]
                let opts = MergeOptions(Seed = int64 seed, AllowNonFinite = true)
                recipes |> List.forall (fun r ->
                    let whole =
                        GraphEvaluator.ChunkElementsOverride <- Nullable 0L
                        try runWith opts r ins finally GraphEvaluator.ChunkElementsOverride <- Nullable()
                    let chunked =
                        GraphEvaluator.ChunkElementsOverride <- Nullable(1L + int64 (block % 5uy))
                        try runWith opts r ins finally GraphEvaluator.ChunkElementsOverride <- Nullable()
                    let expected = reference opts r ins
                    whole |> Map.forall (fun k v -> sameBits v chunked[k] && sameBits v expected[k])))

        test "output buffers are reused only when rented from the pool" {
            use pool = new TensorPool(1L <<< 20)
            let a = pool.Rent([| 4L; 4L |], torch.ScalarType.Float32)
            let handle = a.Handle
            pool.Return a
            let b = pool.Rent([| 4L; 4L |], torch.ScalarType.Float32)
            Expect.equal b.Handle handle "the same buffer comes back"
            let c = pool.Rent([| 4L; 4L |], torch.ScalarType.Float32)
            Expect.notEqual c.Handle handle "a second one is new"
            let foreign = torch.zeros(3L)
            pool.Return foreign
            Expect.isTrue foreign.IsInvalid "a tensor not rented here is disposed"
            pool.Return b
            pool.Return c
        }

        test "a mapped tensor reloaded after its pages were dropped reads the same bytes" {
            use dir = new TempDir()
            let f = dir.File "m.safetensors"
            let n = 5000 // spans whole pages, so they are dropped on release
            let data = Array.init n (fun i -> float32 i * 0.5f - 7.0f)
            let bytes = Array.zeroCreate<byte> (n * 4)
            Buffer.BlockCopy(data, 0, bytes, 0, bytes.Length)
            writeSafetensors f (sprintf """{"w":{"dtype":"F32","shape":[%d],"data_offsets":[0,%d]}}""" n (n * 4)) bytes
            use cp = Checkpoint.Open f
            for _ in 1 .. 3 do
                use t = cp.Load "w"
                Expect.equal (t.data<float32>().ToArray()) data "same values"
        }
    ]
