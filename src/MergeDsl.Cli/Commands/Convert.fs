/// `mergedsl convert IN --out DIR`: a PyTorch pickle checkpoint (.bin/.pt/.pth) to safetensors.
module MergeDsl.Cli.Commands.Convert

open System.IO
open System.Text.Json
open Argu
open MergeDsl.Core.Checkpoints
open MergeDsl.Core.Text
open MergeDsl.Cli.Jobs
open MergeDsl.Cli.Jobs.Failure

type Args =
    | [<MainCommand; ExactlyOnce>] Input of path: string
    | [<Mandatory; Unique>] Out of dir: string
    | Shard_Size of size: string
    | Force
    | Json

    interface IArgParserTemplate with
        member this.Usage =
            match this with
            | Input _ -> "a pytorch_model.bin / .pt / .pth file, a pytorch_model.bin.index.json, a model folder, or a Hugging Face repo id in the local cache."
            | Out _ -> "output folder (safetensors, written atomically; config and tokenizer files copied through)."
            | Shard_Size _ -> "largest output shard (default 5GB)."
            | Force -> "replace an existing output folder (only an empty one or a mergedsl output)."
            | Json -> "print the summary as JSON."

/// Entry point for `mergedsl convert`.
let run (args: ParseResults<Args>) : int =
    let input = JobInputs.modelFolder "convert" (args.GetResult Input)
    let shard =
        match args.TryGetResult Shard_Size with
        | None -> CheckpointWriterOptions().MaxShardBytes
        | Some s ->
            let n = try ByteSize.Parse s with :? System.ArgumentException -> raise (UsageError $"--shard-size: '{s}' is not a size (e.g. 5GB, 500MB)")
            if n <= 0L then raise (UsageError $"--shard-size: must be positive, got '{s}'")
            n
    let out = args.GetResult Out
    use output = JobInputs.reserveOut out (args.Contains Force) [ OutputInput.Of("convert", input) ]
    use source =
        try TorchCheckpoint.Open input
        with :? FileNotFoundException as e -> raise (UsageError e.Message)
    let clock = System.Diagnostics.Stopwatch.StartNew()
    let metadata = readOnlyDict [ "mergedsl.converted_from", Path.GetFullPath input ]
    TorchConversion.ToSafetensors(source, out, CheckpointWriterOptions(Output = output, MaxShardBytes = shard, Metadata = metadata))
    let bytes = source.Tensors |> Seq.sumBy (fun t -> t.ByteLength)
    if args.Contains Json then
        let o =
            {| input = input; output = output.Target; tensors = source.Tensors.Count; bytes = bytes
               skipped = source.Skipped |> Seq.toArray; seconds = clock.Elapsed.TotalSeconds |}
        printfn "%s" (JsonSerializer.Serialize(o, JsonSerializerOptions(WriteIndented = true)))
    else
        printfn "converted %d tensors (%s) from %s into %s in %.2f s" source.Tensors.Count (ByteSize.Format bytes)
            (TerminalText.Sanitize input) output.Target clock.Elapsed.TotalSeconds
        if source.Skipped.Count > 0 then
            let names = source.Skipped |> Seq.truncate 5 |> String.concat ", "
            printfn "left out %d entries that are not tensors: %s%s" source.Skipped.Count (TerminalText.Sanitize names)
                (if source.Skipped.Count > 5 then ", ..." else "")
    ExitCode.Ok
