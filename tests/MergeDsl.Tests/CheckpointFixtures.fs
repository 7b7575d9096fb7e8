/// Helpers for the checkpoint tests: temporary folders and hand-built safetensors files.
module MergeDsl.Tests.CheckpointFixtures

open System
open System.IO
open System.Text

/// A fresh folder under the temp directory, deleted on Dispose.
type TempDir() =
    let path = Path.Combine(Path.GetTempPath(), "mergedsl-test-" + Guid.NewGuid().ToString("N"))
    do Directory.CreateDirectory path |> ignore
    member _.Path = path
    member _.File(name: string) = Path.Combine(path, name)
    interface IDisposable with
        member _.Dispose() =
            if Directory.Exists path then Directory.Delete(path, true)

/// The bytes of a safetensors file: 8-byte little-endian header length, the header text, the data.
let safetensorsBytes (header: string) (data: byte[]) =
    let h = Encoding.UTF8.GetBytes header
    Array.concat [ BitConverter.GetBytes(uint64 h.Length); h; data ]

let writeSafetensors (path: string) (header: string) (data: byte[]) =
    File.WriteAllBytes(path, safetensorsBytes header data)

/// Entries other than the target's own name beside it (a leftover temporary folder would show here).
let leftoversBeside (target: string) =
    let parent = Path.GetDirectoryName target
    Directory.GetFileSystemEntries parent
    |> Array.map Path.GetFileName
    |> Array.filter (fun n -> n.StartsWith(Path.GetFileName target + "."))
