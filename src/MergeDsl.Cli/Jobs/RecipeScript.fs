/// Evaluates `.fsx` recipe scripts with FSharp.Compiler.Service. A script is a program run with the
/// user's rights; `run` and `plan` evaluate it in a child `mergedsl` process (see `runIsolated`), so a
/// script that kills its process (a stack overflow cannot be caught in .NET) ends in one line.
///
/// Convention (docs/cli.md): a script binds its recipe to a top-level value named `recipe`. The
/// host defines the symbol MERGEDSL_HOSTED, so `recipes/load.fsx` skips its `#r` lines and the
/// script compiles against the very assemblies this process has loaded (one copy of every type);
/// it also sets the environment variable MERGEDSL_HOSTED=1 so a script's standalone `main` knows
/// to do nothing. One evaluation session is created per process and reused: starting the compiler
/// costs seconds, a further script costs far less.
module MergeDsl.Cli.Jobs.RecipeScript

open System
open System.Diagnostics
open System.IO
open System.Threading.Tasks
open FSharp.Compiler.Interactive.Shell
open FSharp.Compiler.Diagnostics
open MergeDsl.Cli.Jobs.Failure

/// The name of the value a recipe script must bind.
[<Literal>]
let RecipeValueName = "recipe"

/// The symbol defined while the CLI evaluates a script.
[<Literal>]
let HostedSymbol = "MERGEDSL_HOSTED"

/// Assemblies a hosted script compiles against: the ones this process already runs, the DSL and below (a
/// recipe never needs the CLI).
let private hostReferences () =
    [ typeof<MergeDsl.Core.Torch.DeviceRequest>.Assembly
      typeof<TorchSharp.torch.Tensor>.Assembly
      Reflection.Assembly.Load "MergeDsl" ]
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

/// Set in the child process that `runIsolated` starts: there the command evaluates the script itself.
[<Literal>]
let ChildVariable = "MERGEDSL_SCRIPT_CHILD"

/// True when `recipe` names a script and this process is not already the isolated child.
let shouldIsolate (recipe: string) =
    recipe.EndsWith(".fsx", StringComparison.OrdinalIgnoreCase)
    && Environment.GetEnvironmentVariable ChildVariable <> "1"

/// The command that starts the `mergedsl` CLI: this program again when it is the CLI, else (tests,
/// hosts) the CLI's apphost or `dotnet MergeDsl.Cli.dll` next to this assembly.
let private cliCommand () : string * string list =
    let cli = Reflection.Assembly.GetExecutingAssembly()
    let processPath = Environment.ProcessPath
    let isDotnet = String.Equals(Path.GetFileNameWithoutExtension processPath, "dotnet", StringComparison.OrdinalIgnoreCase)
    if obj.ReferenceEquals(Reflection.Assembly.GetEntryAssembly(), cli) then
        (if isDotnet then processPath, [ cli.Location ] else processPath, [])
    else
        let apphost = Path.Combine(Path.GetDirectoryName cli.Location, Path.GetFileNameWithoutExtension cli.Location)
        if not (OperatingSystem.IsWindows()) && File.Exists apphost then apphost, []
        else
            let dotnet =
                if isDotnet then processPath
                else Option.ofObj (Environment.GetEnvironmentVariable "DOTNET_HOST_PATH") |> Option.defaultValue "dotnet"
            dotnet, [ cli.Location ]

/// What the .NET runtime prints first when a thread overflows its stack (then a trace, then SIGABRT).
[<Literal>]
let private StackOverflowLine = "Stack overflow."

/// Runs `mergedsl <args>` (a `run` or `plan` of the script at `script`) in a child process and relays
/// its output. Returns the child's exit code; a child killed by a signal instead raises a one-line
/// UsageError (stack overflow) or failure (other signals), and the runtime's crash trace is dropped.
let runIsolated (script: string) (args: string list) : int =
    let file, prefix = cliCommand ()
    let psi = ProcessStartInfo(file)
    for a in prefix @ args do
        psi.ArgumentList.Add a
    psi.Environment[ChildVariable] <- "1"
    psi.RedirectStandardOutput <- true
    psi.RedirectStandardError <- true
    psi.UseShellExecute <- false
    use p = Process.Start psi
    let mutable overflowed = false
    let stderr =
        Task.Run(fun () ->
            let mutable line = p.StandardError.ReadLine()
            while not (isNull line) do
                if line.Trim() = StackOverflowLine then overflowed <- true
                if not overflowed then Console.Error.WriteLine line
                line <- p.StandardError.ReadLine())
    let buffer = Array.zeroCreate<char> 8192
    let mutable n = p.StandardOutput.Read(buffer, 0, buffer.Length)
    while n > 0 do
        Console.Out.Write(buffer, 0, n)
        Console.Out.Flush()
        n <- p.StandardOutput.Read(buffer, 0, buffer.Length)
    stderr.Wait()
    p.WaitForExit()
    let code = p.ExitCode
    if overflowed then
        raise (UsageError(sprintf "%s: the script overflowed the stack (unbounded recursion?); the process evaluating it was killed (exit %d)" script code))
    // 128 + N: the child was killed by signal N (Unix exit-status convention that .NET reports).
    elif code > 128 && not (OperatingSystem.IsWindows()) then
        failwithf "%s: the process running the script was killed by signal %d" script (code - 128)
    else code
