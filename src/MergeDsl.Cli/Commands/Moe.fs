/// `mergedsl moe config.yml --out DIR` (or `mergedsl moe config.yml DIR`, as `mergekit-moe config.yml DIR`): dense
/// experts upcycled into a Mixtral / Qwen2-MoE / DeepSeek-MoE checkpoint from a mergekit-moe configuration. Everything
/// is checked (configuration, model configs, tensor headers, output folder) before any tensor is read.
module MergeDsl.Cli.Commands.Moe

open System
open System.IO
open System.Text.Json
open System.Text.Json.Nodes
open Argu
open MergeDsl
open MergeDsl.Core.Checkpoints
open MergeDsl.Core.Moe.Sparse.Upcycling
open MergeDsl.Cli.Jobs.Failure

type Args =
    | [<MainCommand>] Paths of path: string list
    | [<CliPrefix(CliPrefix.None)>] Compress of ParseResults<MoeCompress.Args>
    | [<AltCommandLine("-o"); Unique>] Out of dir: string
    | Overwrite
    | [<CustomCommandLine("--i-understand-this-is-not-useful-without-training")>] Allow_Identical
    | Seed of seed: int64
    | Json

    interface IArgParserTemplate with
        member this.Usage =
            match this with
            | Paths _ -> "the mergekit-moe YAML configuration, optionally followed by the output folder (as mergekit-moe)."
            | Compress _ -> "MC-SMoE: merge a sparse MoE's experts into K per layer by routing statistics (optionally low-rank)."
            | Out _ -> "output folder (written atomically; must not exist unless --overwrite)."
            | Overwrite -> "replace an existing output folder."
            | Allow_Identical -> "accept experts that are all the same model with a prompt-based gate_mode (for training afterwards)."
            | Seed _ -> "seed of the random gate modes and of noise_scale (default 42)."
            | Json -> "print the summary as JSON."

let private report (json: bool) (s: UpcycleSummary) =
    if json then
        let o = JsonObject()
        o["output"] <- JsonValue.Create s.Output
        o["architecture"] <- JsonValue.Create(s.Architecture.ClassName())
        o["experts"] <- JsonValue.Create s.Experts
        o["shared_experts"] <- JsonValue.Create s.SharedExperts
        o["layers"] <- JsonValue.Create s.Layers
        o["parameters"] <- JsonValue.Create s.Parameters
        o["seconds"] <- JsonValue.Create s.Seconds
        printfn "%s" (o.ToJsonString(JsonSerializerOptions(WriteIndented = true)))
    else
        printfn "upcycled %d expert(s)%s into %s (%s, %d layers): %d parameters, %.2f s"
            s.Experts (if s.SharedExperts > 0 then " and a shared expert" else "") s.Output
            (s.Architecture.ClassName()) s.Layers s.Parameters s.Seconds

let private upcycle (args: ParseResults<Args>) : int =
    let config, out =
        match args.GetResult(Paths, defaultValue = []), args.TryGetResult Out with
        | [ c ], Some o -> c, o
        | [ c; o ], None -> c, o
        | [ _ ], None -> raise (UsageError "--out: give the output folder (--out DIR, or after the configuration)")
        | [ _; o ], Some _ -> raise (UsageError $"{o}: the output folder is given twice (positional and --out)")
        | [], _ -> raise (UsageError "moe: give a mergekit-moe configuration (moe config.yml --out DIR) or `moe compress MODEL ...`")
        | _ -> raise (UsageError "moe: expected a configuration and at most one output folder")
    if not (config.EndsWith(".yml", StringComparison.OrdinalIgnoreCase) || config.EndsWith(".yaml", StringComparison.OrdinalIgnoreCase)) then
        raise (UsageError $"{config}: expected a .yml or .yaml mergekit-moe configuration")
    let spec =
        match MergekitMoeConfig.load config with
        | Ok s -> s
        | Error msg -> raise (UsageError msg)
    let spec =
        { spec with
            AllowIdenticalExperts = args.Contains Allow_Identical
            Seed = args.GetResult(Seed, defaultValue = spec.Seed) }
    let core =
        try Upcycle.toCore [] spec
        with :? ArgumentException as e -> raise (UsageError $"{config}: {e.Message}")
    let plan =
        try UpcyclePlan.Make core
        with :? ArgumentException as e -> raise (UsageError $"{config}: {e.Message}")
    let inputs = core.Models |> Seq.distinct |> Seq.map (fun m -> OutputInput.Of("source_model", m)) |> List.ofSeq
    try OutputFolder.Validate(out, args.Contains Overwrite, inputs, "use --overwrite")
    with :? OutputRefusedException as e -> raise (UsageError $"--out: {e.Message}")
    // mergekit-moe keeps the configuration beside the model (mergekit_moe_config.yml).
    let files = Collections.Generic.Dictionary<string, string>(dict [ "mergekit_moe_config.yml", File.ReadAllText config ])
    let summary = UpcycleJob.Run(plan.Spec, out, args.Contains Overwrite, files)
    report (args.Contains Json) summary
    ExitCode.Ok

/// Entry point for `mergedsl moe`: `moe compress ...` (MC-SMoE), else upcycling from a mergekit-moe configuration.
let run (args: ParseResults<Args>) : int =
    match args.TryGetResult Compress with
    | Some _ when args.Contains Paths || args.Contains Out ->
        raise (UsageError "moe compress: give its options after `compress` (moe compress MODEL --data TEXT --experts K --out DIR)")
    | Some compress -> MoeCompress.run compress
    | None -> upcycle args
