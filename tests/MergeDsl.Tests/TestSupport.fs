/// Helpers every test file may use: fresh temporary folders and "this throws that" checks.
module MergeDsl.Tests.TestSupport

open System
open System.IO
open Expecto

/// A new empty folder under the system temp folder, named `mergedsl-<tag>-<guid>`.
let tempDir (tag: string) =
    let d = Path.Combine(Path.GetTempPath(), $"mergedsl-{tag}-{Guid.NewGuid():N}")
    Directory.CreateDirectory d |> ignore
    d

/// Fails unless `f` throws an `'e` whose message contains `fragment`; `what` names the case in the failure.
let throwsWith<'e when 'e :> exn> (f: unit -> unit) (fragment: string) what =
    try
        f ()
        failtest $"{what}: expected {typeof<'e>.Name}"
    with
    | :? 'e as e -> Expect.stringContains e.Message fragment what
    | :? Expecto.AssertException -> reraise ()
    | e -> failtest $"{what}: expected {typeof<'e>.Name}, got {e.GetType().Name}: {e.Message}"
