/// Evaluates `.fsx` recipe scripts in-process with FSharp.Compiler.Service.
///
/// Convention (docs/cli.md): a script binds its recipe to a top-level value named `recipe`. The
/// host defines the symbol MERGEDSL_HOSTED, so `recipes/load.fsx` skips its `#r` lines and the
/// script compiles against the very assemblies this process has loaded (one copy of every type);
/// it also sets the environment variable MERGEDSL_HOSTED=1 so a script's standalone `main` knows
/// to do nothing. One evaluation session is created per process and reused: starting the compiler
/// costs seconds, a further script costs far less.
module MergeDsl.Cli.RecipeScript

open System
open System.IO
open FSharp.Compiler.Interactive.Shell
open FSharp.Compiler.Diagnostics
open MergeDsl.Cli.Failure

/// The name of the value a recipe script must bind.
[<Literal>]
let RecipeValueName = "recipe"

/// The symbol defined while the CLI evaluates a script.
[<Literal>]
let HostedSymbol = "MERGEDSL_HOSTED"

/// Assemblies a hosted script compiles against: the ones this process already runs.
let private hostReferences () =
    [ typeof<MergeDsl.Core.Torch.DeviceRequest>.Assembly
      typeof<TorchSharp.torch.Tensor>.Assembly
      Reflection.Assembly.Load "MergeDsl"
      Reflection.Assembly.GetExecutingAssembly() ]
    |> List.map (fun a -> a.Location)
    |> List.filter (String.IsNullOrEmpty >> not)
    |> List.distinct

let private gate = obj ()
let private output = new StringWriter()
let private errors = new StringWriter()

let private session =
    lazy
        (let config = FsiEvaluationSession.GetDefaultConfiguration()
         let argv =
             [| yield "fsi"
                yield "--noninteractive"
                yield "--nologo"
                yield "--quiet"
                yield "--optimize+"
                yield $"--define:{HostedSymbol}"
                for r in hostReferences () -> $"-r:{r}" |]
         FsiEvaluationSession.Create(config, argv, new StringReader(""), output, errors, collectible = false))

let private firstError (diagnostics: FSharpDiagnostic[]) =
    diagnostics |> Array.tryFind (fun d -> d.Severity = FSharpDiagnosticSeverity.Error)

let private describe (d: FSharpDiagnostic) =
    let msg = d.Message.Replace(Environment.NewLine, " ").Replace("\n", " ")
    sprintf "%s(%d,%d): error FS%04d: %s" d.FileName d.StartLine (d.StartColumn + 1) d.ErrorNumber msg

let private moduleName (full: string) =
    // fsi puts a script's top-level bindings in a module named after the file, first letter capitalised.
    let n = Path.GetFileNameWithoutExtension full
    (string (Char.ToUpperInvariant n[0])) + n.Substring 1

let private tryValue (fsi: FsiEvaluationSession) (expr: string) =
    match fsi.EvalExpressionNonThrowing expr with
    | Choice1Of2 (Some v), _ when v.ReflectionType <> typeof<unit> && not (isNull v.ReflectionValue) ->
        Some(v.ReflectionValue, v.ReflectionType)
    | _ -> None

/// Evaluates the script at `path` and returns the value it bound to `recipe` and that value's type.
/// Compile errors, exceptions thrown by the script and a missing `recipe` raise UsageError with one
/// line naming the script.
let evaluate (path: string) : obj * Type =
    let full = Path.GetFullPath path
    if not (File.Exists full) then raise (UsageError(sprintf "%s: recipe script not found" path))
    lock gate (fun () ->
        Environment.SetEnvironmentVariable(HostedSymbol, "1")
        let fsi = session.Force()
        // Forget a previous script's recipe so a script without one cannot pick it up.
        fsi.EvalInteractionNonThrowing($"let {RecipeValueName} = ()") |> ignore
        let result, diagnostics = fsi.EvalScriptNonThrowing full
        match result, firstError diagnostics with
        | _, Some d -> raise (UsageError(describe d))
        | Choice2Of2 e, None ->
            let e = match e with :? Reflection.TargetInvocationException as t when not (isNull t.InnerException) -> t.InnerException | e -> e
            raise (UsageError(sprintf "%s: the script failed: %s" path (e.Message.Replace("\n", " "))))
        | Choice1Of2 (), None ->
            match tryValue fsi $"``{moduleName full}``.{RecipeValueName}" with
            | Some v -> v
            | None -> raise (UsageError(sprintf "%s: the script binds no value named '%s' (see docs/cli.md)" path RecipeValueName)))
