/// Runs `mergedsl` itself as a child process, so that a measured step has a process (and a peak
/// resident set) of its own.
module MergeDsl.Cli.Jobs.ChildProcess

open System
open System.Diagnostics
open System.IO
open System.Reflection

/// The command line that starts this program again: the apphost directly, or `dotnet mergedsl.dll`.
let selfCommand () : string * string list =
    let processPath = Environment.ProcessPath
    let dll = Assembly.GetEntryAssembly().Location
    let exe = Path.GetFileNameWithoutExtension processPath
    if String.Equals(exe, "dotnet", StringComparison.OrdinalIgnoreCase) then processPath, [ dll ]
    else processPath, []

/// Runs this program with `args`; returns exit code, stdout and stderr.
let runSelf (args: string list) : int * string * string =
    let file, prefix = selfCommand ()
    let psi = ProcessStartInfo(file)
    for a in prefix @ args do
        psi.ArgumentList.Add a
    psi.RedirectStandardOutput <- true
    psi.RedirectStandardError <- true
    psi.UseShellExecute <- false
    use p = Process.Start psi
    let err = p.StandardError.ReadToEndAsync()
    let out = p.StandardOutput.ReadToEnd()
    p.WaitForExit()
    p.ExitCode, out, err.Result
