/// The repository's layout rules that the compiler cannot check.
module MergeDsl.Tests.Layout

open System
open System.IO
open Expecto

let private root =
    lazy
        (let rec up (d: DirectoryInfo) =
            if File.Exists(Path.Combine(d.FullName, "MergeDsl.sln")) then d.FullName
            elif isNull d.Parent then failwithf "MergeDsl.sln not found above %s" AppContext.BaseDirectory
            else up d.Parent
         up (DirectoryInfo AppContext.BaseDirectory))

let private projects () =
    [ for dir in [ "src"; "tests" ] do
        for p in Directory.EnumerateFiles(Path.Combine(root.Value, dir), "*.*proj", SearchOption.AllDirectories) do
            if p.EndsWith ".csproj" || p.EndsWith ".fsproj" then
                Path.GetRelativePath(root.Value, p).Replace('/', '\\') ]

[<Tests>]
let tests =
    testList "Layout" [
        test "MergeDsl.sln names every project under src/ and tests/" {
            let sln = File.ReadAllText(Path.Combine(root.Value, "MergeDsl.sln"))
            for p in projects () do
                Expect.stringContains sln $"\"{p}\"" $"{p} is in MergeDsl.sln (dotnet sln MergeDsl.sln add ...)"
        }

        test "the core references no other project of ours and no benchmark, CLI or F# namespace" {
            let core = Path.Combine(root.Value, "src", "MergeDsl.Core")
            let csproj = File.ReadAllText(Path.Combine(core, "MergeDsl.Core.csproj"))
            Expect.isFalse (csproj.Contains "ProjectReference") "MergeDsl.Core.csproj has no ProjectReference"
            for f in Directory.EnumerateFiles(core, "*.cs", SearchOption.AllDirectories) do
                if not (f.Contains $"{Path.DirectorySeparatorChar}obj{Path.DirectorySeparatorChar}") then
                    let text = File.ReadAllText f
                    for forbidden in [ "MergeDsl.Bench"; "MergeDsl.Cli"; "Microsoft.FSharp" ] do
                        Expect.isFalse (text.Contains forbidden) $"{Path.GetRelativePath(root.Value, f)} mentions {forbidden}"
        }
    ]
