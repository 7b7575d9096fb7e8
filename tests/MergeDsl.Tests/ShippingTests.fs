/// Shipping checks (issue 14): the packages and the installed tool (scripts/checks/packages.sh) and the API
/// reference (scripts/checks/apidocs.sh) run as tests, so CI fails when either breaks; plus the small pieces
/// they rely on, and proof that their link and doc checks do fail on a broken link or an undocumented member.
module MergeDsl.Tests.ShippingTests

open System
open System.Diagnostics
open System.IO
open Expecto
open MergeDsl.Core.Torch

let private repoRoot =
    let rec up (dir: DirectoryInfo) =
        if isNull dir then failwith "no MergeDsl.sln above the test program"
        elif File.Exists(Path.Combine(dir.FullName, "MergeDsl.sln")) then dir.FullName
        else up dir.Parent
    lazy (up (DirectoryInfo AppContext.BaseDirectory))

/// Runs a program in the repository root; exit code and its output (stdout and stderr interleaved).
let private runIn (file: string) (args: string list) =
    let psi = ProcessStartInfo(file, args, WorkingDirectory = repoRoot.Value)
    psi.RedirectStandardOutput <- true
    psi.RedirectStandardError <- true
    // The test runner's own MSBuild/dotnet settings must not leak into the scripts' builds.
    for v in [ "MSBuildExtensionsPath"; "MSBuildSDKsPath"; "MSBUILD_EXE_PATH"; "DOTNET_HOST_PATH" ] do
        psi.Environment.Remove v |> ignore
    use p = new Process(StartInfo = psi)
    let lines = Collections.Concurrent.ConcurrentQueue<string>()
    p.OutputDataReceived.Add(fun e -> if not (isNull e.Data) then lines.Enqueue e.Data)
    p.ErrorDataReceived.Add(fun e -> if not (isNull e.Data) then lines.Enqueue e.Data)
    p.Start() |> ignore
    p.BeginOutputReadLine()
    p.BeginErrorReadLine()
    p.WaitForExit()
    p.ExitCode, String.Join("\n", lines)

let private tail (n: int) (text: string) =
    let lines = text.Split '\n'
    String.Join("\n", lines |> Array.skip (max 0 (lines.Length - n)))

let private script (name: string) =
    let code, output = runIn "bash" [ Path.Combine("scripts", "checks", name) ]
    if code <> 0 then failtestf "scripts/checks/%s exited with %d; the end of its output:\n%s" name code (tail 40 output)
    output

let private fsx (name: string) (args: string list) =
    runIn "dotnet" ([ "fsi"; Path.Combine(repoRoot.Value, "scripts", "checks", name) ] @ args)

[<Tests>]
let tests =
    testList "Shipping" [
        test "the toolkit's version is the packages' version" {
            let asm = typeof<MergeDsl.Core.Ir.MergeRecipe>.Assembly.GetName().Version
            Expect.equal MergeDsl.Version.Current $"{asm.Major}.{asm.Minor}.{asm.Build}" "Version.fs against <Version> in Directory.Build.props"
        }

        test "scripts loading TorchSharp from a NuGet folder get its package's copies fixed" {
            let dll = Path.Combine("/nuget", "torchsharp", "0.107.0", "lib", "net8.0", "TorchSharp.dll")
            Expect.sequenceEqual
                (TorchRuntime.BesideTorchSharp dll)
                [ Path.Combine("/nuget", "torchsharp", "0.107.0", "runtimes", "linux-x64", "native", "libLibTorchSharp.so")
                  Path.Combine("/nuget", "torchsharp", "0.107.0", "lib", "net8.0", "cpu", "libLibTorchSharp.so") ]
                "the package's runtimes copy and the folder TorchSharp consolidates natives into"
        }

        test "the link check fails on a broken link and a missing heading" {
            let dir = Path.Combine(Path.GetTempPath(), $"mergedsl-links-{Guid.NewGuid():N}")
            Directory.CreateDirectory(Path.Combine(dir, "docs")) |> ignore
            Directory.CreateDirectory(Path.Combine(dir, "site")) |> ignore
            try
                File.WriteAllText(Path.Combine(dir, "README.md"), "# Top\nSee [a](docs/a.md) and [gone](docs/gone.md).\n")
                File.WriteAllText(Path.Combine(dir, "docs", "a.md"), "# A page\n[back](../README.md#top), [nowhere](../README.md#no-such-heading)\n")
                File.WriteAllText(Path.Combine(dir, "site", "index.html"), "<a href=\"a.html\">a</a> <a href=\"reference/x.html#M1\">x</a>")
                File.WriteAllText(Path.Combine(dir, "site", "a.html"), "<h1 id=\"a\">A</h1><a href=\"index.html#a\">self</a>")
                let code, output = fsx "linkcheck.fsx" [ dir; Path.Combine(dir, "site") ]
                Expect.equal code 1 $"exit status; output:\n{output}"
                Expect.stringContains output "README.md: link to missing file docs/gone.md" "a missing page"
                Expect.stringContains output "no heading #no-such-heading" "a missing heading"
                Expect.stringContains output "site index.html: link to missing reference/x.html#M1" "a missing API page"
                Expect.stringContains output "no id/name \"a\" in index.html" "a missing anchor in the site"
                Expect.isFalse (output.Contains "#top") "a heading that exists is not reported"
            finally
                Directory.Delete(dir, true)
        }

        test "the doc check fails on a public member without an XML doc" {
            let bin = Path.Combine(repoRoot.Value, "src", "MergeDsl.Cli", "bin", "Release", "net10.0")
            let xml = Path.Combine(bin, "MergeDsl.xml")
            let doc = System.Xml.Linq.XDocument.Load xml
            let members = doc.Descendants(System.Xml.Linq.XName.Get "member") |> Seq.toList
            let victim = members |> List.find (fun m -> m.Attribute(System.Xml.Linq.XName.Get "name").Value = "T:MergeDsl.Sign.Mass")
            victim.Remove()
            let edited = Path.Combine(Path.GetTempPath(), $"mergedsl-doc-{Guid.NewGuid():N}.xml")
            doc.Save edited
            try
                let dll = Path.Combine(bin, "MergeDsl.dll")
                let code, output = fsx "doccheck.fsx" [ $"{dll}={edited}" ]
                Expect.equal code 1 $"exit status; output:\n{output}"
                Expect.stringContains output "no XML doc: union case MergeDsl.Sign.Mass" "the member whose doc was removed"
            finally
                File.Delete edited
        }

        // The two full checks build and pack the repository's projects: one at a time, never beside other tests.
        testSequenced <| testList "checks" [
            test "packages: pack, install the tool and reference the package on a clean HOME (scripts/checks/packages.sh)" {
                let output = script "packages.sh"
                Expect.stringContains output "package check passed" "the script's last step"
            }

            test "API reference: fsdocs build, no broken link, every public member documented (scripts/checks/apidocs.sh)" {
                let output = script "apidocs.sh"
                Expect.stringContains output "no broken link" "link check"
                Expect.stringContains output "is documented" "doc check"
            }
        ]
    ]
