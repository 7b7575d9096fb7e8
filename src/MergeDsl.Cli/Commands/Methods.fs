/// `mergedsl methods [--markdown]`: every method of the registry with its parameters, ranges and
/// defaults (docs/cli.md holds the Markdown form verbatim; a test keeps the two equal).
module MergeDsl.Cli.Commands.Methods

open Argu
open MergeDsl
open MergeDsl.Cli.Jobs.Failure

type Args =
    | Markdown

    interface IArgParserTemplate with
        member this.Usage =
            match this with
            | Markdown -> "print the table as Markdown (as in docs/cli.md)."

let private plain () =
    for m in MethodRegistry.all do
        let aliases = if m.Aliases.IsEmpty then "" else $""" (also {System.String.Join(", ", m.Aliases)})"""
        printfn "%s%s: %s" m.Name aliases m.Summary
        for p in m.Parameters do
            let dflt =
                match p.Default with
                | Required -> "required"
                | Optional meaning -> $"default: {meaning}"
                | DefaultsTo v -> $"default {v}"
            printfn "    %-14s %s; %s" p.Name p.Help dflt

/// Entry point for `mergedsl methods`.
let run (args: ParseResults<Args>) : int =
    if args.Contains Markdown then printf "%s" (MethodRegistry.markdownTable ()) else plain ()
    ExitCode.Ok
