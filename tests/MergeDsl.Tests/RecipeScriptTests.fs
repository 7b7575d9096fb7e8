module MergeDsl.Tests.RecipeScriptTests

open System
open System.IO
open Expecto
open MergeDsl
open MergeDsl.Core.Ir
open MergeDsl.Cli.Jobs

/// The repository's recipes/ folder, found upward from the test binaries.
let recipesDir =
    let rec up (d: DirectoryInfo) =
        if isNull d then failwith "recipes/ not found above the test binaries"
        elif File.Exists(Path.Combine(d.FullName, "recipes", "load.fsx")) then Path.Combine(d.FullName, "recipes")
        else up d.Parent
    up (DirectoryInfo AppContext.BaseDirectory)

let private resolve source settings models =
    JobInputs.resolveRecipe source settings None models

[<Tests>]
let tests =
    testSequenced
    <| testList "RecipeScript" [
        test "every built-in method has a recipe script" {
            for name in MethodRegistry.merges |> List.map (fun m -> m.Name) do
                Expect.isTrue (File.Exists(Path.Combine(recipesDir, name + ".fsx"))) $"recipes/{name}.fsx"
        }

        test "ties.fsx through FCS compiles to the built-in ties, --set included" {
            let settings = [ "density", "0.4"; "lambda", "0.7" ]
            let script = resolve (JobInputs.Script(Path.Combine(recipesDir, "ties.fsx"))) settings 2
            let builtIn = resolve (JobInputs.BuiltIn "ties") settings 2
            Expect.equal (script.Recipe.Describe()) (builtIn.Recipe.Describe()) "same expression"
            Expect.stringContains (script.Recipe.Describe()) "0.4" "density reached the script"
            Expect.equal script.Recipe.Name "ties" "name"
        }

        test "every recipe script compiles to its built-in method's expression (defaults)" {
            for m in MethodRegistry.merges do
                let name = m.Name
                let models = match m.Models with Exactly n -> n | AtLeast _ -> 3
                let settings = Registry.requiredSettings m models
                let script = resolve (JobInputs.Script(Path.Combine(recipesDir, name + ".fsx"))) settings models
                let builtIn = resolve (JobInputs.BuiltIn name) settings models
                Expect.equal (script.Recipe.Describe()) (builtIn.Recipe.Describe()) $"{name}.fsx"
                Expect.equal script.Recipe.Name name $"{name}.fsx names itself"
        }

        test "slerp.fsx equals the CLI's built-in slerp (two models, no base)" {
            let script = resolve (JobInputs.Script(Path.Combine(recipesDir, "slerp.fsx"))) [ "t", "0.25" ] 2
            let builtIn = resolve (JobInputs.BuiltIn "slerp") [ "t", "0.25" ] 2
            Expect.equal (script.Recipe.Describe()) (builtIn.Recipe.Describe()) "same expression"
            Expect.isFalse (JobInputs.needsBase script.Recipe) "slerp of two models reads no base"
        }

        test "a --set the script does not read is an unknown parameter" {
            let e =
                Expect.throwsT<MergeDsl.Cli.Jobs.Failure.UsageError> (fun () ->
                    resolve (JobInputs.Script(Path.Combine(recipesDir, "slerp.fsx"))) [ "density", "0.5" ] 2 |> ignore)
            ()
        }

        test "a script with a compile error gives one line naming the file and position" {
            let dir = Directory.CreateTempSubdirectory("mergedsl-fsx-")
            try
                let bad = Path.Combine(dir.FullName, "bad.fsx")
                File.WriteAllText(bad, "let recipe = notDefinedAnywhere + 1\n")
                let msg =
                    try
                        resolve (JobInputs.Script bad) [] 2 |> ignore
                        ""
                    with MergeDsl.Cli.Jobs.Failure.UsageError m -> m
                Expect.stringContains msg "bad.fsx(1," "file and line"
                Expect.stringContains msg "notDefinedAnywhere" "what is wrong"
                Expect.isFalse (msg.Contains '\n') "one line"
                let none = Path.Combine(dir.FullName, "none.fsx")
                File.WriteAllText(none, "let x = 1\n")
                let msg2 =
                    try
                        resolve (JobInputs.Script none) [] 2 |> ignore
                        ""
                    with MergeDsl.Cli.Jobs.Failure.UsageError m -> m
                Expect.stringContains msg2 "no value named 'recipe'" "missing recipe"
            finally
                dir.Delete true
        }
    ]
