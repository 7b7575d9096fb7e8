/// Merge input checks (NaN/Inf inputs, tensors missing from a model, --shard-size), recipe scripts as
/// programs (run in a child process, recursion), and terminal-safe output (escapes, huge names).
module MergeDsl.Tests.ValidationTests

open System
open System.IO
open System.Text.Json
open Expecto
open TorchSharp
open MergeDsl
open MergeDsl.Core.Checkpoints
open MergeDsl.Core.Compilation
open MergeDsl.Core.Execution
open MergeDsl.Core.Ir
open MergeDsl.Core.Text
open MergeDsl.Cli.Jobs
open MergeDsl.Tests.AlgebraSupport

let private mergedsl = CliHarness.mergedsl

let private scratch =
    lazy
        (let d = Directory.CreateTempSubdirectory("mergedsl-validation-tests-").FullName
         AppDomain.CurrentDomain.ProcessExit.Add(fun _ -> try Directory.Delete(d, true) with _ -> ())
         d)

let private fresh (name: string) = Path.Combine(scratch.Value, name + "-" + Guid.NewGuid().ToString("N").Substring(0, 8))

let private writeModel (folder: string) (tensors: (string * torch.Tensor) list) =
    CheckpointWriter.WriteAll(folder, readOnlyDict tensors, CheckpointWriterOptions())

/// 100 entries, so that breadcrumbs' default gamma (0.01) drops round(0.01·100) = 1 outlier: a NaN,
/// which ranks largest, would be that outlier.
let private entries = 100L

let private seeded (seed: int) =
    torch.manual_seed (int64 seed) |> ignore
    [ "a", torch.randn([| entries |]); "w", torch.randn([| entries |]) ]

/// base, e1, e2 folders; `tamper` changes e2's tensors.
let private trio (tag: string) (tamper: (string * torch.Tensor) list -> (string * torch.Tensor) list) =
    let b, e1, e2 = fresh (tag + "-base"), fresh (tag + "-e1"), fresh (tag + "-e2")
    writeModel b (seeded 1)
    writeModel e1 (seeded 2)
    writeModel e2 (tamper (seeded 3))
    b, e1, e2

let private withNaN (tensors: (string * torch.Tensor) list) =
    tensors
    |> List.map (fun (n, t) ->
        if n = "w" then
            let c = t.clone()
            c[7L] <- torch.tensor Single.NaN
            n, c
        else n, t)

let private single (err: string) = err.Trim().Split('\n').Length = 1

let private noRawControls (text: string) =
    text |> Seq.forall (fun c -> not (Char.IsControl c && c <> '\n' && c <> '\r') && c <> '\u202e')

/// Expects exit `code`, one stderr line holding every fragment, and nothing at `out`.
let private expectFailure (code: int) (args: string list) (out: string) (fragments: string list) =
    let rc, _, err = mergedsl args
    Expect.equal rc code $"exit code ({err})"
    Expect.isTrue (single err) $"one line: {err}"
    for f in fragments do
        Expect.stringContains err f "names the culprit"
    Expect.isFalse (Directory.Exists out || File.Exists out) "nothing at --out"
    Expect.isEmpty (Directory.GetDirectories(Path.GetDirectoryName out, Path.GetFileName out + "*")) "no temporary folder left"

let private readTensor (folder: string) (name: string) =
    use cp = Checkpoint.Open folder
    use t = cp.Load name
    values t

/// A JSON string literal for a safetensors header (escapes control characters as JSON requires).
let private jsonString (s: string) = JsonSerializer.Serialize s

let private writeRaw (folder: string) (name: string) (metadata: (string * string) list) =
    Directory.CreateDirectory folder |> ignore
    let meta = String.Join(",", metadata |> List.map (fun (k, v) -> $"{jsonString k}:{jsonString v}"))
    let header = $"{{\"__metadata__\":{{{meta}}},{jsonString name}:{{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}}}"
    CheckpointFixtures.writeSafetensors (Path.Combine(folder, "model.safetensors")) header (Array.zeroCreate 8)

let private hostile = "w\u001b]0;pwned\u0007\u001b[2J\u202e"

let private script (name: string) (body: string) =
    let path = Path.Combine(scratch.Value, name + "-" + Guid.NewGuid().ToString("N").Substring(0, 6) + ".fsx")
    let load = Path.Combine(RecipeScriptTests.recipesDir, "load.fsx").Replace("\\", "/")
    File.WriteAllText(path, $"#load \"{load}\"\nopen MergeDsl\n{body}\nlet recipe = Recipe.experts |> Recipe.mean |> Recipe.ofTensor |> Recipe.named \"average\" []\nhandOver recipe\n")
    path

[<Tests>]
let core =
    testList "Validation core" [
        test "breadcrumbs alone would hide a NaN input: the input check catches it, typed, naming tensor and model" {
            let b = model "base" [ "w", vec (List.replicate 100 0.0) ]
            let e1 = model "e1" [ "w", vec [ for i in 1..100 -> float i / 100.0 ] ]
            let e2v = [ for i in 1..100 -> if i = 8 then nan else float i / 50.0 ]
            let e2 = model "e2" [ "w", vec e2v ]
            let recipe = (MethodRegistry.byName "breadcrumbs" Map.empty |> function Ok r -> r | Error e -> failwith e)
            // Why it escaped before: the NaN ranks largest and is dropped as the outlier, so the output is clean.
            let allowed = runWith (MergeOptions(AllowNonFinite = true)) recipe (inputs (Some b) [ e1; e2 ])
            Expect.isTrue (allowed["w"] |> Array.forall Single.IsFinite) "breadcrumbs' output alone looks finite"
            Expect.throwsC (fun () -> run recipe (inputs (Some b) [ e1; e2 ]) |> ignore) (fun e ->
                match e with
                | :? NonFiniteTensorException as n ->
                    Expect.equal (n.Tensor, n.Model, n.Count, n.FirstIndex) ("w", "e2", 1L, 7L) "tensor, model, count, index"
                | e -> failtestf "expected NonFiniteTensorException, got %O" e)
        }

        test "missing tensors are compile errors naming tensor and model, in any position" {
            let w = vec [ 1.0; 2.0 ]
            let full label = model label [ "w", w; "x", w ]
            let partial label = model label [ "w", w ]
            let ta = Methods.taskArithmetic 0.3
            expectRecipeError [ "x: missing from expert 'e1' (present in base 'base')" ] (fun () ->
                Compiler.Compile(ta, inputs (Some(full "base")) [ partial "e1"; full "e2" ]) |> ignore) |> ignore
            expectRecipeError [ "x: missing from expert 'e2'" ] (fun () ->
                Compiler.Compile(ta, inputs (Some(full "base")) [ full "e1"; partial "e2" ]) |> ignore) |> ignore
            expectRecipeError [ "x: missing from base 'base' (present in expert 'e1')" ] (fun () ->
                Compiler.Compile(ta, inputs (Some(partial "base")) [ full "e1"; full "e2" ]) |> ignore) |> ignore
            // No base: the first expert is the reference, and it lacks x.
            expectRecipeError [ "x: missing from expert 'e1' (present in expert 'e2')" ] (fun () ->
                Compiler.Compile(Methods.average, inputs None [ partial "e1"; full "e2" ]) |> ignore) |> ignore
            expectRecipeError [ "needs a base" ] (fun () ->
                Compiler.Compile(Methods.average, inputs None [ full "e1"; full "e2" ], CompileOptions(TakeMissingFromBase = true)) |> ignore) |> ignore
            // Taking from the base does not cover a tensor the base lacks.
            expectRecipeError [ "x: missing from base 'base'" ] (fun () ->
                Compiler.Compile(ta, inputs (Some(partial "base")) [ full "e1" ], CompileOptions(TakeMissingFromBase = true)) |> ignore) |> ignore
        }

        test "several missing tensors: the first is named, the rest counted" {
            let w = vec [ 1.0 ]
            expectRecipeError [ "x: missing from expert 'e1'"; "2 more tensors not in every model" ] (fun () ->
                Compiler.Compile(Methods.average, inputs (Some(model "base" [ "w", w; "x", w; "y", w ])) [ model "e1" [ "w", w; "z", w ] ]) |> ignore) |> ignore
        }

        test "ByteSize.Parse: garbage and out-of-range values are ArgumentExceptions naming the value" {
            for bad in [ "99999999999999999999999GB"; "99999999999999999999999999999999999"; "9223372036854775808"; "10000000TB"; "1e5GB"; "5XB"; ""; "-1GB"; "1.5" ] do
                Expect.throwsC (fun () -> ByteSize.Parse bad |> ignore) (fun e ->
                    match e with
                    | :? ArgumentException -> Expect.stringContains e.Message $"'{bad}'" "names the value"
                    | e -> failtestf "%s: expected ArgumentException, got %O" bad e)
            Expect.equal (ByteSize.Parse "9223372036854775807") Int64.MaxValue "the largest byte count"
            Expect.equal (ByteSize.Parse "2GiB") (2L <<< 30) "binary units"
        }

        test "TerminalText.Sanitize escapes controls, C1, bidi and backslashes, keeps other text, bounds length" {
            Expect.equal (TerminalText.Sanitize hostile) "w\\x1b]0;pwned\\x07\\x1b[2J\\u202e" "ESC, BEL, RLO"
            Expect.equal (TerminalText.Sanitize "a\u009bb\u2066c\\d") "a\\x9bb\\u2066c\\\\d" "C1 CSI, isolate, backslash"
            Expect.equal (TerminalText.Sanitize "mlp.fc1 ü 模型 😀") "mlp.fc1 ü 模型 😀" "printable text untouched"
            Expect.equal (TerminalText.Sanitize("abcdefghij", 4)) "abcd… (10 chars)" "cut with the length"
            Expect.equal (TerminalText.Sanitize null) "" "null"
        }
    ]

[<Tests>]
let cli =
    testSequenced
    <| testList "Validation CLI" [
        test "NaN in an expert stops every built-in method with one line naming tensor and model" {
            let b, e1, e2 = trio "nan" withNaN
            // Every method that reads the experts (passthrough copies the base and never reads them).
            for m in MergeDsl.MethodRegistry.merges |> List.filter (fun m -> m.Name <> "passthrough") do
                let methodName = m.Name
                let out = fresh ("nan-out-" + methodName)
                let models = match m.Models with MergeDsl.Exactly 1 -> [ "--model"; e2 ] | _ -> [ "--model"; e1; "--model"; e2 ]
                let inputs = if methodName = "slerp" then models else [ "--base"; b ] @ models
                let sets = MergeDsl.Tests.Registry.requiredSettings m 2 |> List.collect (fun (k, v) -> [ "--set"; $"{k}={v}" ])
                let args = [ "run"; methodName ] @ inputs @ sets @ [ "--out"; out; "--quiet" ]
                let rc, _, err = mergedsl args
                Expect.equal rc 1 $"{methodName}: exit 1 ({err})"
                Expect.isTrue (single err) $"{methodName}: one line: {err}"
                Expect.stringContains err $"w: input model '{Path.GetFileName e2}' has 1 NaN/Inf value (first at flat index 7)" methodName
                Expect.stringContains err "--allow-nonfinite" $"{methodName}: says how to keep them"
                Expect.isFalse (Directory.Exists out) $"{methodName}: nothing at --out"
                let kept = fresh ("nan-kept-" + methodName)
                let rc, _, err = mergedsl (args |> List.map (fun a -> if a = out then kept else a) |> fun a -> a @ [ "--allow-nonfinite" ])
                Expect.equal rc 0 $"{methodName} with --allow-nonfinite: {err}"
        }

        test "a tensor missing from the first model, a later model or the base: exit 2, named, nothing written" {
            let drop (ts: (string * torch.Tensor) list) = ts |> List.filter (fun (n, _) -> n <> "a")
            let b, e1, e2 = trio "miss" id
            let lacking = fresh "miss-lacking"
            writeModel lacking (drop (seeded 4))
            let out = fresh "miss-out"
            expectFailure 2 [ "run"; "average"; "--model"; lacking; "--model"; e1; "--out"; out ] out
                [ "a: missing from expert '"; Path.GetFileName lacking ]
            expectFailure 2 [ "run"; "ties"; "--base"; b; "--model"; e1; "--model"; lacking; "--out"; out ] out
                [ "a: missing from expert '"; Path.GetFileName lacking; "missing-from-base" ]
            expectFailure 2 [ "run"; "task-arithmetic"; "--base"; lacking; "--model"; e1; "--model"; e2; "--out"; out ] out
                [ "a: missing from base '"; Path.GetFileName lacking ]
            let rc, _, err = mergedsl [ "plan"; "average"; "--model"; lacking; "--model"; e1 ]
            Expect.equal rc 2 $"plan fails the same way: {err}"
            Expect.stringContains err "a: missing from expert" "plan names it"
        }

        test "--missing-from-base takes the base's tensor (values checked), merges the rest" {
            let b, e1, _ = trio "take" id
            let lacking = fresh "take-lacking"
            writeModel lacking (seeded 4 |> List.filter (fun (n, _) -> n <> "a"))
            let out = fresh "take-out"
            let rc, _, err = mergedsl [ "run"; "task-arithmetic"; "--base"; b; "--model"; e1; "--model"; lacking; "--out"; out; "--missing-from-base"; "--quiet" ]
            Expect.equal rc 0 err
            Expect.equal (readTensor out "a") (readTensor b "a") "a is the base's"
            let expected = Array.init (int entries) (fun i -> (readTensor b "w")[i] + 0.3f * ((readTensor e1 "w")[i] - (readTensor b "w")[i] + (readTensor lacking "w")[i] - (readTensor b "w")[i]))
            expectClose 1e-5f (readTensor out "w") expected "w merged from all three"
            let rc, plan, err = mergedsl [ "plan"; "task-arithmetic"; "--base"; b; "--model"; e1; "--model"; lacking; "--missing-from-base"; "--tensors"; "2" ]
            Expect.equal rc 0 err
            Expect.stringContains plan "taken from base" "the plan says where a comes from"
        }

        test "--shard-size garbage: one line naming the option and the value, exit 2" {
            let b, e1, e2 = trio "shard" id
            for size in [ "99999999999999999999999GB"; "lots"; "1e5GB"; "0" ] do
                let out = fresh "shard-out"
                expectFailure 2 [ "run"; "average"; "--base"; b; "--model"; e1; "--model"; e2; "--out"; out; "--shard-size"; size ] out [ "--shard-size"; $"'{size}'" ]
                let _, _, err = mergedsl [ "run"; "average"; "--base"; b; "--model"; e1; "--model"; e2; "--out"; out; "--shard-size"; size ]
                Expect.isFalse (err.Contains "Decimal") "no .NET arithmetic message"
        }

        test "a script that recurses forever: one line, non-zero exit, this process survives" {
            let _, e1, e2 = trio "rec" id
            let path = script "recurse" "let rec f (x: int) : int = f x + 1\nlet r = f 0"
            for command in [ "run"; "plan" ] do
                let out = fresh "rec-out"
                let rc, _, err = mergedsl ([ command; path; "--model"; e1; "--model"; e2 ] @ (if command = "run" then [ "--out"; out ] else []))
                Expect.notEqual rc 0 $"{command}: non-zero exit"
                Expect.isTrue (single err) $"{command}: one line: {err}"
                Expect.stringContains err path $"{command}: names the script"
                Expect.stringContains err "overflowed the stack" $"{command}: says what happened"
                Expect.isFalse (Directory.Exists out) "nothing written"
        }

        test "plan runs the script's code, as docs/cli.md and README.md say" {
            let _, e1, e2 = trio "planrun" id
            let marker = fresh "marker"
            let path = script "effect" $"System.IO.File.WriteAllText({jsonString marker}, \"ran\")"
            let rc, out, err = mergedsl [ "plan"; path; "--model"; e1; "--model"; e2 ]
            Expect.equal rc 0 err
            Expect.stringContains out "recipe: average" "the plan is printed"
            Expect.equal (File.ReadAllText marker) "ran" "plan executed the script"
            let root = Path.GetDirectoryName RecipeScriptTests.recipesDir
            for doc in [ "docs/cli.md"; "README.md" ] do
                let text = File.ReadAllText(Path.Combine(root, doc))
                Expect.stringContains text "runs with your rights" $"{doc} says a script is a program"
                Expect.stringContains text "`plan`" $"{doc} mentions plan"
        }

        test "escape sequences in a tensor name and metadata come out escaped from inspect and error lines" {
            let dir = fresh "esc"
            writeRaw dir hostile [ "note", "\u001b]0;pwned\u0007\u001b[2J"; "k\u009b", "v" ]
            let rc, out, err = mergedsl [ "inspect"; dir ]
            Expect.equal rc 0 err
            Expect.isTrue (noRawControls out) "no raw control or bidi character on stdout"
            Expect.stringContains out "w\\x1b]0;pwned\\x07\\x1b[2J\\u202e" "the name, escaped"
            Expect.stringContains out "note = \\x1b]0;pwned\\x07\\x1b[2J" "the metadata, escaped"
            Expect.stringContains out "k\\x9b = v" "a C1 control in a key, escaped"
            let rc, json, err = mergedsl [ "inspect"; dir; "--json" ]
            Expect.equal rc 0 err
            Expect.isTrue (noRawControls json) "no raw control or bidi character in the JSON"
            use doc = JsonDocument.Parse json
            let name = doc.RootElement.GetProperty("tensors").[0].GetProperty("name").GetString()
            Expect.equal name hostile "the JSON keeps the exact name"
            let twin = fresh "esc-twin"
            writeRaw twin hostile []
            let rc, plan, err = mergedsl [ "plan"; "average"; "--model"; dir; "--model"; twin; "--tensors"; "1" ]
            Expect.equal rc 0 err
            Expect.isTrue (noRawControls plan) "no raw control character in plan --tensors"
            Expect.stringContains plan "w\\x1b]0;pwned" "the name in the plan, escaped"
            // The same name in an error line (a tensor only this model has).
            let other = fresh "esc-other"
            writeRaw other "w" []
            let rc, _, err = mergedsl [ "plan"; "average"; "--model"; dir; "--model"; other ]
            Expect.equal rc 2 err
            Expect.isTrue (single err) err
            Expect.isTrue (noRawControls err) $"no raw control character on stderr: {err}"
            Expect.stringContains err "w\\x1b]0;pwned\\x07\\x1b[2J\\u202e: missing from expert" "escaped in the error line"
        }

        test "a 10 MB tensor name is inspected into a small table" {
            let dir = fresh "long"
            let name = String('n', 10_000_000)
            writeRaw dir name []
            let rc, out, err = mergedsl [ "inspect"; dir ]
            Expect.equal rc 0 err
            Expect.isLessThan out.Length 20_000 "output stays small"
            Expect.stringContains out "(10000000 chars)" "the cell says how long the name is"
        }
    ]
