module MergeDsl.Tests.ScalarArgsTests

open System
open Expecto
open MergeDsl.Core.Torch
open TorchSharp

/// Each ScalarArgs helper must call the same TorchSharp overload the implicit-conversion form called,
/// so the Scalar fix cannot change a merge result: compared elementwise for exact equality (NaN-free
/// inputs), on values whose roundings are not trivial.
let private same (name: string) (expected: torch.Tensor) (actual: torch.Tensor) =
    Expect.equal actual.dtype expected.dtype $"{name}: dtype"
    Expect.sequenceEqual actual.shape expected.shape $"{name}: shape"
    Expect.isTrue (expected.eq(actual).all().item<bool>()) $"{name}: values differ from the implicit-Scalar form"

[<Tests>]
let tests =
    testList "ScalarArgs" [
        test "helpers equal the implicit-Scalar TorchSharp calls bit for bit" {
            use _ = torch.NewDisposeScope()
            use gen = new torch.Generator(7UL)
            // The reference forms' Scalars are held here to the end: they must not race the GC either.
            let held = ResizeArray<Scalar>()
            let sc (v: Scalar) = held.Add v; v
            let x = torch.randn([| 257L |], dtype = torch.ScalarType.Float32, generator = gen)
            let y = torch.randn([| 257L |], dtype = torch.ScalarType.Float32, generator = gen)
            let x64 = x.to_type(torch.ScalarType.Float64)
            let ints = torch.randint(0L, 1L <<< 31, [| 300L |], dtype = torch.ScalarType.Int64, generator = gen)
            same "Plus(tensor)" (x.add(y, (sc ((1).ToScalar())))) (ScalarArgs.Plus(x, y))
            same "Plus(double)" (x64.add((sc ((0.1).ToScalar())), (sc ((1).ToScalar())))) (ScalarArgs.Plus(x64, 0.1))
            same "Plus(long)" (ints.add((sc ((41L).ToScalar())), (sc ((1).ToScalar())))) (ScalarArgs.Plus(ints, 41L))
            same "Times" (x.mul((sc ((1.702).ToScalar())))) (ScalarArgs.Times(x, 1.702))
            same "Times float64" (x64.mul((sc ((Math.Sin 0.3 / Math.Sin 0.7).ToScalar())))) (ScalarArgs.Times(x64, Math.Sin 0.3 / Math.Sin 0.7))
            same "Over" (x.div((sc ((255.0).ToScalar())))) (ScalarArgs.Over(x, 255.0))
            same "Over trunc" (ints.div((sc ((65536L).ToScalar())), torch.RoundingMode.trunc)) (ScalarArgs.Over(ints, 65536L, torch.RoundingMode.trunc))
            same "Mod" (ints.remainder((sc ((65536L).ToScalar())))) (ScalarArgs.Mod(ints, 65536L))
            same "EqualTo" (ints.remainder((sc ((3L).ToScalar()))).eq((sc ((1L).ToScalar())))) (ScalarArgs.EqualTo(ints.remainder((sc ((3L).ToScalar()))), 1L))
            same "Power" (x.pow((sc ((2L).ToScalar())))) (ScalarArgs.Power(x, 2L))
            same "ClampTo" (x.clamp((sc ((-0.5).ToScalar())), (sc ((0.5).ToScalar())))) (ScalarArgs.ClampTo(x, -0.5, 0.5))
            same "Below" (x.lt((sc ((0.25).ToScalar())))) (ScalarArgs.Below(x, 0.25))
            same "FillWith" (x.clone().fill_((sc ((0.3).ToScalar())))) (ScalarArgs.FillWith(x.clone(), 0.3))
            let idx = torch.tensor([| 0L; 5L; 256L |])
            same "SetTrue" (torch.zeros(257L, dtype = torch.ScalarType.Bool).index_fill_(0L, idx, (sc ((true).ToScalar()))))
                           (ScalarArgs.SetTrue(torch.zeros(257L, dtype = torch.ScalarType.Bool), 0L, idx))
            same "Full" (torch.full([| 3L; 4L |], (sc ((0.1).ToScalar())), dtype = torch.ScalarType.Float32)) (ScalarArgs.Full([| 3L; 4L |], 0.1, torch.ScalarType.Float32))
            same "FullLike" (torch.full_like(x, (sc ((0.35).ToScalar())), dtype = torch.ScalarType.Float64)) (ScalarArgs.FullLike(x, 0.35, torch.ScalarType.Float64))
            same "Range" (torch.arange((sc ((0L).ToScalar())), (sc ((17L).ToScalar())), (sc ((1L).ToScalar())), dtype = torch.ScalarType.Int64)) (ScalarArgs.Range(17L, torch.ScalarType.Int64))
            GC.KeepAlive held
            for v in held do v.Dispose()
            Expect.sequenceEqual (ScalarArgs.Range(5L, torch.ScalarType.Int64).data<int64>().ToArray()) [| 0L .. 4L |] "Range counts from 0"
        }

        test "helpers survive forced collections between calls" {
            // Not a reproduction of the race (its window is microseconds); checks that holding and
            // disposing the Scalars ourselves leaves nothing for a finalizer to free twice.
            use _ = torch.NewDisposeScope()
            let x = torch.ones([| 64L |], dtype = torch.ScalarType.Float64)
            let mutable acc = torch.zeros([| 64L |], dtype = torch.ScalarType.Float64)
            for i in 1..200 do
                acc <- ScalarArgs.Over(ScalarArgs.Plus(acc, ScalarArgs.Times(x, float i)), 1.0)
                if i % 50 = 0 then
                    GC.Collect()
                    GC.WaitForPendingFinalizers()
            Expect.equal (acc.sum().item<float>()) (64.0 * 200.0 * 201.0 / 2.0) "Σ i over 200 steps, 64 entries"
        }
    ]
