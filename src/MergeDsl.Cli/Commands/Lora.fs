/// `mergedsl lora extract --base B --model M --rank r --out A`: a PEFT LoRA adapter approximating M − B.
module MergeDsl.Cli.Commands.Lora

open System.Text.Json
open Argu
open MergeDsl.Core.Checkpoints
open MergeDsl.Core.Lora
open MergeDsl.Core.Text
open MergeDsl.Cli.Jobs
open MergeDsl.Cli.Jobs.Failure

type ExtractArgs =
    | [<Mandatory; Unique>] Base of model: string
    | [<Mandatory; Unique>] Model of model: string
    | [<Mandatory; Unique>] Rank of r: int
    | [<Mandatory; Unique>] Out of dir: string
    | Force
    | Quiet
    | Json

    interface IArgParserTemplate with
        member this.Usage =
            match this with
            | Base _ -> "the base model (folder or Hugging Face repo id in the local cache)."
            | Model _ -> "the fine-tuned model (folder, repo id, or model+adapter)."
            | Rank _ -> "LoRA rank r (a module smaller than r gets min(out, in))."
            | Out _ -> "output adapter folder (adapter_config.json + adapter_model.safetensors, written atomically)."
            | Force -> "replace an existing output folder (only an empty one or a mergedsl output)."
            | Quiet -> "print only the summary line."
            | Json -> "print every module's rank and explained energy as JSON."

type Args =
    | [<CliPrefix(CliPrefix.None)>] Extract of ParseResults<ExtractArgs>

    interface IArgParserTemplate with
        member this.Usage =
            match this with
            | Extract _ -> "extract a LoRA adapter (truncated SVD of every Linear's weight difference)."

let private extract (args: ParseResults<ExtractArgs>) =
    let rank = args.GetResult Rank
    if rank < 1 then raise (UsageError $"--rank: must be at least 1, got {rank}")
    let baseText, modelText = args.GetResult Base, args.GetResult Model
    let baseRef, modelRef = JobInputs.resolveModel "--base" baseText, JobInputs.resolveModel "--model" modelText
    let inputs =
        [ OutputInput.Of("--base", baseRef.Folder); OutputInput.Of("--model", modelRef.Folder) ]
        @ (Option.ofObj modelRef.Adapter |> Option.map (fun a -> OutputInput.Of("--model", a)) |> Option.toList)
    use output = JobInputs.reserveOut (args.GetResult Out) (args.Contains Force) inputs
    use b = JobInputs.openOne "--base" baseText
    use m = JobInputs.openOne "--model" modelText
    let json = args.Contains Json
    let show = not json && not (args.Contains Quiet)
    let onModule (r: LoraModuleReport) =
        if show then
            printfn "%-60s rank %4d of %5d  energy %8.4f%%" (TerminalText.Sanitize r.Module) r.Rank (min r.Out r.In) (100.0 * r.Energy)
    let result =
        LoraExtractor.Extract(b, m, rank, output.Target, CheckpointWriterOptions(Output = output), baseText, onModule)
    let modules = result.Modules
    let totalEnergy =
        let kept = modules |> Seq.sumBy (fun r -> r.Energy * r.DeltaNorm * r.DeltaNorm)
        let all = modules |> Seq.sumBy (fun r -> r.DeltaNorm * r.DeltaNorm)
        if all = 0.0 then 1.0 else kept / all
    if json then
        let o =
            {| output = output.Target; rank = rank; energy = totalEnergy
               modules = modules |> Seq.map (fun r -> {| ``module`` = r.Module; rank = r.Rank; energy = r.Energy; delta_norm = r.DeltaNorm |}) |> Seq.toArray
               skipped_embeddings = result.SkippedEmbeddings |> Seq.toArray; differing_not_adapted = result.DifferingOther |> Seq.toArray |}
        printfn "%s" (JsonSerializer.Serialize(o, JsonSerializerOptions(WriteIndented = true)))
    else
        printfn "extracted %d modules at rank %d into %s; explained energy over all modules %.4f%%" modules.Count rank output.Target (100.0 * totalEnergy)
        let note (what: string) (names: System.Collections.Generic.IReadOnlyList<string>) =
            if names.Count > 0 then
                let shown = names |> Seq.truncate 5 |> String.concat ", "
                printfn "not in the adapter: %d %s differ from the base: %s%s" names.Count what (TerminalText.Sanitize shown) (if names.Count > 5 then ", ..." else "")
        note "embedding tensor(s)" result.SkippedEmbeddings
        note "other tensor(s) (norms, biases)" result.DifferingOther
    ExitCode.Ok

/// Entry point for `mergedsl lora`.
let run (args: ParseResults<Args>) : int =
    match args.TryGetResult Extract with
    | Some a -> extract a
    | None -> raise (UsageError "lora: give a subcommand (extract)")
