/// The notebooks of docs/notebooks: each one runs headlessly (scripts/checks/notebooks.sh, dotnet-repl) without a
/// failing cell, and the fresh run's outputs have the same structure as the committed, executed copy.
module MergeDsl.Tests.NotebookTests

open System
open System.Diagnostics
open System.IO
open System.Text.Json
open Expecto
open MergeDsl.Bench.Data

let private root =
    lazy
        (let rec up (d: DirectoryInfo) =
            if File.Exists(Path.Combine(d.FullName, "MergeDsl.sln")) then d.FullName
            elif isNull d.Parent then failwithf "MergeDsl.sln not found above %s" AppContext.BaseDirectory
            else up d.Parent
         up (DirectoryInfo AppContext.BaseDirectory))

/// Per cell: its type, and for a code cell the kinds of its outputs (output type, and the MIME types or stream
/// name), as a sorted set: how many stream chunks a run prints may vary, what kinds it shows may not.
let structure (path: string) =
    use doc = JsonDocument.Parse(File.ReadAllText path)
    [ for cell in doc.RootElement.GetProperty("cells").EnumerateArray() ->
        let kind = cell.GetProperty("cell_type").GetString()
        let outputs =
            match cell.TryGetProperty "outputs" with
            | true, outs ->
                [ for o in outs.EnumerateArray() ->
                    let t = o.GetProperty("output_type").GetString()
                    match o.TryGetProperty "data", o.TryGetProperty "name" with
                    | (true, data), _ -> t + ":" + String.Join(",", [ for p in data.EnumerateObject() -> p.Name ] |> List.sort)
                    | _, (true, name) -> t + ":" + name.GetString()
                    | _ -> t ]
                |> List.distinct
                |> List.sort
            | _ -> []
        kind, outputs ]

/// Error outputs of an executed notebook, as "cell N: message".
let errors (path: string) =
    use doc = JsonDocument.Parse(File.ReadAllText path)
    [ for i, cell in doc.RootElement.GetProperty("cells").EnumerateArray() |> Seq.indexed do
        match cell.TryGetProperty "outputs" with
        | true, outs ->
            for o in outs.EnumerateArray() do
                if o.GetProperty("output_type").GetString() = "error" then
                    let value = match o.TryGetProperty "evalue" with | true, v -> v.GetString() | _ -> "?"
                    yield $"cell {i}: {value}"
        | _ -> () ]

/// The notebooks and whether they read the task pool's data.
let private notebooks =
    [ "first-merge.ipynb", true
      "recipe-algebra.ipynb", false
      "wemoe-end-to-end.ipynb", true ]

let private runNotebook (name: string) =
    let out = Directory.CreateTempSubdirectory("mergedsl-notebooks-").FullName
    let psi = ProcessStartInfo("bash", [ Path.Combine(root.Value, "scripts", "checks", "notebooks.sh"); out; Path.Combine(root.Value, "docs", "notebooks", name) ])
    psi.RedirectStandardOutput <- true
    psi.RedirectStandardError <- true
    use p = Process.Start psi
    let stdout = p.StandardOutput.ReadToEndAsync()
    let stderr = p.StandardError.ReadToEndAsync()
    if not (p.WaitForExit(TimeSpan.FromMinutes 20.0)) then
        p.Kill true
        failtestf "%s: still running after 20 minutes" name
    p.ExitCode, stdout.Result + stderr.Result, Path.Combine(out, name)

[<Tests>]
let tests =
    testSequencedGroup "quick task-pool zoo" <| testList "Notebooks" [
        test "the structure reader sees cells, output kinds and errors" {
            let f = Path.GetTempFileName()
            File.WriteAllText(f, """{"cells": [{"cell_type": "markdown", "source": []},
                {"cell_type": "code", "outputs": [{"output_type": "stream", "name": "stdout"}, {"output_type": "stream", "name": "stdout"},
                  {"output_type": "display_data", "data": {"text/html": [], "image/png": ""}}]},
                {"cell_type": "code", "outputs": [{"output_type": "error", "ename": "Error", "evalue": "boom"}]}]}""")
            Expect.equal (structure f)
                [ "markdown", []; "code", [ "display_data:image/png,text/html"; "stream:stdout" ]; "code", [ "error" ] ] "structure"
            Expect.equal (errors f) [ "cell 2: boom" ] "errors"
            File.Delete f
        }
        for name, needsData in notebooks do
            test $"{name} runs without a failing cell, and its outputs have the committed copy's structure" {
                if needsData then
                    let s = DataStore(DataStore.DefaultRoot())
                    if not (s.IsAvailable TaskSource.Digits && s.IsAvailable TaskSource.Fashion) then
                        skiptestf "data not installed; run: %s" DataStore.InstallCommand
                let committed = Path.Combine(root.Value, "docs", "notebooks", name)
                let code, log, fresh = runNotebook name
                Expect.isTrue (File.Exists fresh) $"an executed copy was written ({log})"
                Expect.equal (errors fresh) [] $"no failing cell ({log})"
                Expect.equal code 0 $"scripts/checks/notebooks.sh exit code ({log})"
                let c = structure committed
                Expect.isTrue (c |> List.exists (fun (k, outs) -> k = "code" && not outs.IsEmpty)) "the committed copy holds outputs"
                Expect.equal (structure fresh) c "cells and output kinds as committed"
                Directory.Delete(Path.GetDirectoryName fresh, true)
            }
    ]
