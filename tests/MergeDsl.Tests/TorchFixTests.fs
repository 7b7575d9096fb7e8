module MergeDsl.Tests.TorchFixTests

open System
open System.IO
open Expecto
open MergeDsl.Build
open MergeDsl.Core.Torch
open TorchSharp

let private loadedCopy () =
    TorchRuntime.CandidateLibraries AppContext.BaseDirectory |> Seq.tryFind File.Exists

[<Tests>]
let tests =
    testList "TorchSharp on this machine" [
        test "ELF hash of the version name matches the one in libLibTorchSharp.so" {
            Expect.equal (ElfVerneedPatcher.ElfHash "GLIBCXX_3.4.32") 0x0297f842u "vna_hash of GLIBCXX_3.4.32"
        }

        test "the build left the program's copy loadable on this machine" {
            match loadedCopy () with
            | None -> failtest "no libLibTorchSharp.so beside the test program"
            | Some lib ->
                let state = ElfVerneedPatcher.Inspect lib
                if ElfVerneedPatcher.SystemLibStdCxxLacksRequiredVersion() then
                    Expect.equal state PatchOutcome.AlreadyWeak "Debian 12: the requirement must be weak"
                else
                    Expect.notEqual state PatchOutcome.NotRequired "the library still records its requirement"
        }

        test "patching is idempotent and touches only the flag bytes" {
            match loadedCopy () with
            | None -> failtest "no libLibTorchSharp.so beside the test program"
            | Some lib ->
                let copy = Path.Combine(Path.GetTempPath(), $"mergedsl-elf-{Guid.NewGuid():N}.so")
                File.Copy(lib, copy)
                try
                    let before = File.ReadAllBytes copy
                    let first = ElfVerneedPatcher.Apply copy
                    let once = File.ReadAllBytes copy
                    let second = ElfVerneedPatcher.Apply copy
                    let twice = File.ReadAllBytes copy
                    Expect.contains [ PatchOutcome.Patched; PatchOutcome.AlreadyWeak ] first "first apply"
                    Expect.equal second PatchOutcome.AlreadyWeak "second apply writes nothing"
                    Expect.equal twice once "idempotent"
                    let changed = Array.zip before once |> Array.filter (fun (a, b) -> a <> b) |> Array.length
                    Expect.isLessThanOrEqual changed 1 "at most one byte differs (the flag bit)"
                finally
                    File.Delete copy
        }

        test "a tensor operation runs (1000x1000 matmul)" {
            TorchRuntime.EnsureLoadable() |> ignore
            use _ = torch.NewDisposeScope()
            let a = torch.ones([| 1000L; 1000L |])
            let b = torch.ones([| 1000L; 1000L |]).mul(torch.tensor 2.0f)
            let c = torch.matmul(a, b)
            Expect.equal (c.[0L, 0L].item<float32> ()) 2000.0f "each entry is 1000 * 1 * 2"
        }

        test "--device cpu resolves to the CPU and --device cuda fails clearly without CUDA" {
            Expect.equal (DeviceChoice.Resolve DeviceRequest.Cpu).``type`` DeviceType.CPU "cpu"
            if not (DeviceChoice.CudaAvailable()) then
                let e = Expect.throwsT<DeviceUnavailableException> (fun () -> DeviceChoice.Resolve DeviceRequest.Cuda |> ignore) "cuda"
                ()
        }
    ]
