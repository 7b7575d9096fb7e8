/// `mergedsl finalize OUT`: joins the parts of a partitioned merge (OUT.parts/part-I-of-N) into OUT, after checking
/// that every part is there, finished, undamaged (the hash of every shard) and from the same plan and inputs.
module MergeDsl.Cli.Commands.Finalize

open System.Text.Json
open Argu
open MergeDsl.Core.Checkpoints
open MergeDsl.Core.Partitioning
open MergeDsl.Cli.Jobs.Failure

type Args =
    | [<MainCommand; ExactlyOnce>] Out of dir: string
    | Force
    | [<AltCommandLine("-q")>] Quiet
    | Json

    interface IArgParserTemplate with
        member this.Usage =
            match this with
            | Out _ -> "the --out folder the parts were run with (their pieces are in OUT.parts/)."
            | Force -> "replace OUT if it exists (only an empty folder or a mergedsl output)."
            | Quiet -> "print nothing on success."
            | Json -> "print a machine-readable summary as JSON on stdout."

/// Entry point for `mergedsl finalize`.
let run (args: ParseResults<Args>) : int =
    let out = args.GetResult Out
    let result =
        try PartFinalizer.Finalize(out, args.Contains Force, "use --force")
        with :? OutputRefusedException as e -> raise (UsageError $"finalize: {e.Message}")
    if args.Contains Json then
        printfn "%s" (JsonSerializer.Serialize(result, JsonSerializerOptions(WriteIndented = true, PropertyNamingPolicy = JsonNamingPolicy.CamelCase)))
    elif not (args.Contains Quiet) then
        printfn "finalized %d part(s), %d shard(s), %s into %s (verifying hashes %.2f s, joining %.2f s)" result.Parts result.Shards
            (ByteSize.Format result.Bytes) result.Target result.VerifyTime.TotalSeconds result.JoinTime.TotalSeconds
    ExitCode.Ok
