module MergeDsl.Cli.Program

open Argu
open MergeDsl.Cli.Jobs.Failure
open MergeDsl.Cli.Commands

/// Every subcommand of `mergedsl`; each lives in its own module under Commands/.
// No [<RequireSubcommand>]: `mergedsl version` is a flag-style command and must parse on its own.
type Args =
    | [<CliPrefix(CliPrefix.None); AltCommandLine("--version")>] Version
    | [<AltCommandLine("-v"); Inherit>] Verbose
    | [<CliPrefix(CliPrefix.None)>] Inspect of ParseResults<Inspect.InspectArgs>
    | [<CliPrefix(CliPrefix.None)>] Methods of ParseResults<Methods.Args>
    | [<CliPrefix(CliPrefix.None)>] Demo of ParseResults<Demo.DemoArgs>
    | [<CliPrefix(CliPrefix.None)>] Run of ParseResults<MergeArgs.Args>
    | [<CliPrefix(CliPrefix.None)>] Plan of ParseResults<MergeArgs.Args>
    | [<CliPrefix(CliPrefix.None)>] Import of ParseResults<Mergekit.Args>
    | [<CliPrefix(CliPrefix.None)>] Bench of ParseResults<Bench.Args>
    | [<CliPrefix(CliPrefix.None)>] Data of ParseResults<Data.Args>
    | [<CliPrefix(CliPrefix.None)>] Upscale of ParseResults<Upscale.Args>
    | [<CliPrefix(CliPrefix.None)>] Adapt of ParseResults<Adapt.Args>
    | [<CliPrefix(CliPrefix.None)>] Eval of ParseResults<Eval.Args>
    | [<CliPrefix(CliPrefix.None)>] Score of ParseResults<Score.Args>
    | [<CliPrefix(CliPrefix.None)>] Generate of ParseResults<Generate.Args>
    | [<CliPrefix(CliPrefix.None)>] Convert of ParseResults<Convert.Args>
    | [<CliPrefix(CliPrefix.None)>] Lora of ParseResults<Lora.Args>
    | [<CliPrefix(CliPrefix.None)>] Finalize of ParseResults<Finalize.Args>
    | [<CliPrefix(CliPrefix.None)>] Moe of ParseResults<Moe.Args>

    interface IArgParserTemplate with
        member this.Usage =
            match this with
            | Version -> "print the version."
            | Verbose -> "print stack traces with errors."
            | Inspect _ -> "list a checkpoint's tensors (validates every header)."
            | Methods _ -> "list every merge and upscaling method with its parameters, ranges and defaults."
            | Demo _ -> "merge real experts on real data (MNIST/Fashion tasks): per-task accuracy of each method and a plot."
            | Run _ -> "merge checkpoints with a built-in method or an .fsx recipe."
            | Import _ -> "print the F# recipe equivalent to a mergekit YAML configuration."
            | Plan _ -> "show the compiled plan of a merge (ops, bytes, memory, phases) without running it."
            | Data _ -> "task-pool data: `data fetch` installs and caches MNIST digits and Fashion-MNIST."
            | Bench _ -> "benchmarks: `bench stream` measures merge speed against a plain copy of the same bytes."
            | Upscale _ -> "upscale a CLIP model and its experts into an MoE model (wemoe, e-wemoe, smile)."
            | Adapt _ -> "test-time adaptation: train WEMoE routers (or AdaMerging coefficients) on unlabelled data."
            | Eval _ -> "per-task accuracy and loss of a model with heads on labelled data (FusionBench JSON)."
            | Score _ -> "bits per byte and mean log-likelihood of a text under a Llama-family or sparse MoE (Mixtral, Qwen2-MoE, DeepSeek-MoE) model."
            | Generate _ -> "continue a prompt with a Llama-family or sparse MoE model (greedy, sampled or SCMoE; KV cache)."
            | Convert _ -> "convert a PyTorch .bin/.pt checkpoint to safetensors (restricted unpickler: no code runs)."
            | Lora _ -> "LoRA adapters: `lora extract` writes a PEFT adapter approximating model - base (truncated SVD)."
            | Finalize _ -> "join the parts of a partitioned merge (run --part I/N) into the output, after checking them."
            | Moe _ -> "sparse MoE: `moe config.yml` upcycles dense experts (mergekit-moe YAML); `moe compress` merges experts (MC-SMoE)."

/// Runs the command an argument names; None for global flags such as --verbose.
let private dispatch (arg: Args) : int option =
    match arg with
    | Version ->
        printfn "mergedsl %s" MergeDsl.Version.Current
        Some ExitCode.Ok
    | Verbose -> None
    | Inspect a -> Some(Inspect.run a)
    | Methods a -> Some(Methods.run a)
    | Demo a -> Some(Demo.run a)
    | Run a -> Some(Run.run a)
    | Plan a -> Some(Plan.run a)
    | Import a -> Some(Mergekit.run a)
    | Bench a -> Some(Bench.run a)
    | Data a -> Some(Data.run a)
    | Upscale a -> Some(Upscale.run a)
    | Adapt a -> Some(Adapt.run a)
    | Eval a -> Some(Eval.run a)
    | Score a -> Some(Score.run a)
    | Generate a -> Some(Generate.run a)
    | Convert a -> Some(Convert.run a)
    | Lora a -> Some(Lora.run a)
    | Finalize a -> Some(Finalize.run a)
    | Moe a -> Some(Moe.run a)

[<EntryPoint>]
let main argv =
    let parser = ArgumentParser.Create<Args>(programName = "mergedsl")
    let results =
        try
            Ok(parser.ParseCommandLine(argv, raiseOnUsage = true))
        with :? ArguParseException as e ->
            Error e
    match results with
    | Error e when e.ErrorCode = ErrorCode.HelpText ->
        printfn "%s" e.Message
        ExitCode.Ok
    | Error e ->
        eprintfn "%s" e.Message
        ExitCode.Usage
    | Ok results ->
        let verbose = results.Contains Verbose
        guard verbose (fun () ->
            results.GetAllResults()
            |> List.tryPick dispatch
            |> Option.defaultWith (fun () -> raise (UsageError "no command given; try `mergedsl --help`")))
