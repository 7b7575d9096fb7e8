/// The method registry: one table that the CLI, scripts, docs and tests derive from.
module MergeDsl.Tests.Registry

open System
open System.IO
open Expecto
open MergeDsl

/// Settings for a method's required parameters, for `models` experts (weights 1, 2, 3, ...).
let requiredSettings (m: MergeMethod) (models: int) : (string * string) list =
    [ for p in m.Parameters do
        match p.Default, p.Type with
        | Required, Numbers -> p.Name, String.Join(",", [ 1 .. models ])
        | Required, Number r when r.Contains 0.5 -> p.Name, "0.5"
        | Required, other -> failwithf "no example value for required %s parameter %s" m.Name p.Name
        | _ -> () ]

let private repoFile (relative: string) =
    let rec up (d: DirectoryInfo) =
        let candidate = Path.Combine(d.FullName, relative)
        if File.Exists candidate then candidate
        elif isNull d.Parent then failwithf "%s not found above %s" relative AppContext.BaseDirectory
        else up d.Parent
    up (DirectoryInfo AppContext.BaseDirectory)

[<Tests>]
let tests =
    testList "MethodRegistry" [
        test "names and aliases are unique across the registry" {
            let all = MethodRegistry.all |> List.collect (fun m -> m.Name :: m.Aliases)
            Expect.equal (List.distinct all) all "no name or alias twice"
            for m in MethodRegistry.all do
                Expect.equal (m.Parameters |> List.map (fun p -> p.Name) |> List.distinct).Length m.Parameters.Length $"{m.Name}: parameters unique"
        }

        test "aliases and spellings resolve to the canonical method" {
            for alias, name in [ "TA", "task-arithmetic"; "linear", "weighted-average"; "ties_merging", "ties"; "Model_Stock", "model-stock"; "ewemoe", "e-wemoe" ] do
                Expect.equal (MethodRegistry.tryFind alias |> Option.map (fun m -> m.Name)) (Some name) alias
        }

        test "every default lies inside its parameter's range, and every static method builds with defaults" {
            for m in MethodRegistry.all do
                let settings = requiredSettings m (match m.Models with Exactly n -> n | AtLeast _ -> 3) |> Map.ofList
                match MethodRegistry.resolve m.Name settings with
                | Ok r -> Expect.equal r.Method.Name m.Name "resolved"
                | Error e -> failtestf "%s with defaults: %s" m.Name e
        }

        test "ranges are checked before anything runs, naming the parameter and the range" {
            let err name ps (fragments: string list) =
                match MethodRegistry.resolve name (Map ps) with
                | Ok _ -> failtestf "expected %s %A to be refused" name ps
                | Error e ->
                    for f in fragments do
                        Expect.stringContains e f "message"
                    Expect.isFalse (e.Contains '\n') "one line"
            err "breadcrumbs" [ "gamma", "1" ] [ "gamma"; "[0, 1)" ]
            err "della" [ "epsilon", "5" ] [ "density ± epsilon" ]
            err "della" [ "epsilon", "-0.1" ] [ "epsilon"; "[0, ∞)" ]
            err "slerp" [ "t", "1.5" ] [ "'t'"; "[0, 1]" ]
            err "ties" [ "density", "NaN" ] [ "density"; "not a number" ]
            err "wemoe" [ "router-depth", "3" ] [ "router-depth"; "[0, 2]" ]
            err "wemoe" [ "routing", "top-k:0" ] [ "routing" ]
            err "smile" [ "keep", "0" ] [ "keep"; "(0, 1]" ]
            err "weighted-average" [ "weights", "1,-1" ] [ "sum to 0" ]
        }

        test "the seed is recorded where given, and only where the method takes one" {
            match MethodRegistry.byName "dare-ties" (Map [ "seed", "7" ]) with
            | Ok r -> Expect.equal r.Parameters["seed"] "7" "seed recorded"
            | Error e -> failtest e
            Expect.isError (MethodRegistry.byName "ties" (Map [ "seed", "7" ])) "ties is not random"
        }

        test "upscaling settings build the spec the upscaler runs" {
            match MethodRegistry.resolve "e-wemoe" (Map [ "keep", "0.25"; "shared-router", "yes"; "routing", "top-p:0.9"; "lambda", "0.5" ]) with
            | Ok { Build = BuiltUpscaling spec } ->
                Expect.equal spec.Method EWeMoE "kind"
                Expect.equal spec.Keep (Some 0.25) "keep"
                Expect.isTrue spec.SharedRouter "shared router"
                Expect.equal spec.Routing (Some(Routing.TopP 0.9)) "routing"
                Expect.equal spec.Rest.Parameters["lambda"] "0.5" "rest TA λ"
            | other -> failtestf "%A" other
            match MethodRegistry.resolve "e-wemoe" Map.empty with
            | Ok { Build = BuiltUpscaling spec } -> Expect.equal spec.Keep Upscale.ewemoe.Keep "E-WEMoE keeps its own default"
            | other -> failtestf "%A" other
        }

        test "docs/cli.md holds the registry's parameter table verbatim" {
            let doc = File.ReadAllText(repoFile "docs/cli.md")
            Expect.stringContains doc (MethodRegistry.markdownTable ()) "regenerate the table in docs/cli.md from MethodRegistry.markdownTable ()"
        }
    ]
