/// `mergedsl bench textscale`: the scale study on the text pool (see docs/results-text.md, "Merging at scale"):
/// zoos at several widths with a weaker and a stronger base, merged over 2 to 7 experts by Average, TA, TIES and
/// WEMoE; writes results.json, results.md and two PNGs (quality against width, and against the number of experts).
module MergeDsl.Cli.Commands.Textscale

open System
open System.IO
open Argu
open Spectre.Console
open TorchSharp
open MergeDsl.Bench.Data
open MergeDsl.Bench.TextScale
open MergeDsl.Cli.Jobs.Failure

type Args =
    | Quick
    | Data of dir: string
    | Out of dir: string
    | Seed of seed: int
    | Threads of count: int
    | Widths of widths: string
    | Pretrain_Steps of steps: string
    | Expert_Counts of counts: string
    | Methods of names: string
    | Combine of reports: string

    interface IArgParserTemplate with
        member this.Usage =
            match this with
            | Quick -> "CI mode: widths 16 and 32, few steps, 2 and 4 experts; every stage still runs."
            | Data _ -> "data folder (default $MERGEDSL_DATA or ~/.cache/mergedsl); zoos are shared with `bench textpool`."
            | Out _ -> "report folder (default results/textscale)."
            | Seed _ -> "zoo and method seed; also orders the experts whose prefixes are merged (default 42)."
            | Threads _ -> "torch CPU threads (default 1)."
            | Widths _ -> "comma-separated model widths (default 32,64,128)."
            | Pretrain_Steps _ -> "comma-separated pretraining steps of the weaker and the stronger base (default 125,500)."
            | Expert_Counts _ -> "comma-separated numbers of merged experts, 1 to 7 (default 2,4,6,7)."
            | Methods _ -> "comma-separated rows to run after Pretrained and Individual (default \"Simple Average,Task Arithmetic,TIES-Merging,WEMoE\"; also \"WEMoE (expert distillation, ours)\")."
            | Combine _ -> "comma-separated report folders (or results.json files) of runs with other seeds: writes their summaries, mean ± std over seeds and paired by seed, to --out instead of running."

let private numbers (option: string) (text: string) =
    text.Split(',', StringSplitOptions.RemoveEmptyEntries ||| StringSplitOptions.TrimEntries)
    |> Array.map (fun s ->
        match Int32.TryParse s with
        | true, v -> v
        | _ -> raise (UsageError(sprintf "%s: '%s' is not a whole number" option s)))
    |> Array.toList

/// The options of the full study or its --quick variant, with the command line's changes.
let optionsOf (args: ParseResults<Args>) (dataRoot: string) (log: string -> unit) =
    let list option (value: string option) =
        value |> Option.map (fun s -> numbers option s :> Collections.Generic.IReadOnlyList<int>) |> Option.toObj
    let methods =
        args.TryGetResult Methods
        |> Option.map (fun s ->
            Collections.Generic.HashSet<string>(s.Split(',', StringSplitOptions.RemoveEmptyEntries ||| StringSplitOptions.TrimEntries))
            :> Collections.Generic.IReadOnlySet<string>)
        |> Option.toObj
    try
        TextScaleOptions.Create(
            dataRoot, args.Contains Quick, args.GetResult(Seed, defaultValue = 42), Action<string> log,
            list "--widths" (args.TryGetResult Widths), list "--pretrain-steps" (args.TryGetResult Pretrain_Steps),
            list "--expert-counts" (args.TryGetResult Expert_Counts), methods)
    with :? ArgumentException as e ->
        raise (UsageError e.Message)

/// The two plots: normalised held-in and held-out quality against width (solid: strong base, dashed: weak base),
/// and against the number of merged experts (mean over widths).
/// `seeds` names the seeds a combined plot's points are pooled from (their group means are means over seeds).
let writePlots (r: TextScaleResult) (seeds: int list) (outDir: string) =
    let methods = r.Methods |> Seq.filter (fun m -> m <> "Individual") |> List.ofSeq
    let bases = r.Points |> Seq.map (fun p -> p.Base) |> Seq.distinct |> List.ofSeq
    let strongest = List.last bases
    let quick =
        (if r.Quick then " (--quick)" else "")
        + (if seeds.Length > 1 then sprintf ", mean over seeds %s" (seeds |> List.map string |> String.concat ",") else "")
    // One line per method and base: solid for the strongest base, dashed for the others.
    let lines axis (value: TextScalePoint -> float) =
        [ for mi, m in List.indexed methods do
              for b in bases ->
                  let values = TextScaleReports.Summary(r, m, axis, Func<_, _> value, Func<_, _>(fun p -> p.Base = b))
                  sprintf "%s (%s base)" m b, mi, (b <> strongest), Seq.toArray values ]
    let byWidth = lines TextScaleReports.Axis.Width
    let byExperts = lines TextScaleReports.Axis.Experts
    let widthLabels =
        TextScaleReports.Groups(r, TextScaleReports.Axis.Width)
        |> Seq.map (fun w -> let z = r.Zoos |> Seq.find (fun z -> string z.Width = w) in sprintf "%s (%s params)" w (z.Parameters.ToString("N0")))
        |> List.ofSeq
    let expertLabels = TextScaleReports.Groups(r, TextScaleReports.Axis.Experts) |> List.ofSeq
    Plots.lines widthLabels (byWidth (fun p -> p.NormalisedHeldIn)) "model width" "held-in bits/byte: expert / merged (1 = experts)"
        (sprintf "Merged quality vs model size, mean over expert counts%s" quick) (Path.Combine(outDir, "scale-width-held-in.png"))
    Plots.lines widthLabels (byWidth (fun p -> p.NormalisedHeldOut)) "model width" "held-out bits/byte: best expert / merged"
        (sprintf "Held-out generalisation vs model size, mean over expert counts%s" quick) (Path.Combine(outDir, "scale-width-held-out.png"))
    Plots.lines expertLabels (byExperts (fun p -> p.NormalisedHeldIn)) "experts merged" "held-in bits/byte: expert / merged (1 = experts)"
        (sprintf "Merged quality vs number of experts, mean over widths%s" quick) (Path.Combine(outDir, "scale-experts-held-in.png"))
    Plots.lines expertLabels (byExperts (fun p -> p.NormalisedHeldOut)) "experts merged" "held-out bits/byte: best expert / merged"
        (sprintf "Held-out generalisation vs number of experts, mean over widths%s" quick) (Path.Combine(outDir, "scale-experts-held-out.png"))

/// The report files a run writes.
let reportFiles =
    [ "results.json"; "results.md"; "scale-width-held-in.png"; "scale-width-held-out.png"; "scale-experts-held-in.png"; "scale-experts-held-out.png" ]

/// Runs the study with `options` and writes the reports; returns the result.
let executeWith (outDir: string) (options: TextScaleOptions) =
    let result = TextScaleStudy.Run options
    Directory.CreateDirectory outDir |> ignore
    TextScaleReports.WriteJson(result, Path.Combine(outDir, "results.json"))
    TextScaleReports.WriteMarkdown(result, Path.Combine(outDir, "results.md"))
    writePlots result [ result.Seed ] outDir
    result

/// Prints the summary the study's questions read: normalised held-in by width and base, held-out by expert count.
let printSummary (r: TextScaleResult) =
    let show (title: string) axis (value: TextScalePoint -> float) =
        let table = Table().Border(TableBorder.Rounded)
        table.AddColumn("Method") |> ignore
        let groups = TextScaleReports.Groups(r, axis)
        for g in groups do
            table.AddColumn(TableColumn(Markup.Escape g).RightAligned()) |> ignore
        for m in r.Methods do
            let cells = TextScaleReports.Summary(r, m, axis, Func<_, _> value) |> Seq.map (fun x -> if Double.IsFinite x then sprintf "%.3f" x else "-")
            table.AddRow(Array.append [| Markup.Escape m |] (Seq.toArray cells)) |> ignore
        AnsiConsole.MarkupLine(Markup.Escape title)
        AnsiConsole.Write table
    show "normalised held-in (expert bpb / merged bpb) by width" TextScaleReports.Axis.Width (fun p -> p.NormalisedHeldIn)
    show "normalised held-in by base" TextScaleReports.Axis.Base (fun p -> p.NormalisedHeldIn)
    show "normalised held-out (best expert bpb / merged bpb) by number of experts" TextScaleReports.Axis.Experts (fun p -> p.NormalisedHeldOut)
    AnsiConsole.MarkupLine(sprintf "total %.1f min" (r.TotalSeconds / 60.0))

/// Reads the reports named in `text` (folders holding results.json, or the files), checks that they are one study
/// run with different seeds, and writes the combined reports into `outDir`; one-line errors name the report at fault.
let combine (text: string) (outDir: string) =
    let runs = CombineArgs.combined TextScaleCombine.Read (fun parts -> TextScaleCombine.Check parts) text outDir
    Directory.CreateDirectory outDir |> ignore
    TextScaleCombine.WriteJson(runs, Path.Combine(outDir, "results.json"))
    File.WriteAllText(Path.Combine(outDir, "results.md"), TextScaleCombine.Markdown runs)
    writePlots (TextScaleCombine.Pooled runs) [ for r in runs -> r.Seed ] outDir
    printfn "reports: %s" (String.Join(", ", reportFiles |> List.map (fun f -> Path.Combine(outDir, f))))
    ExitCode.Ok

let private study (args: ParseResults<Args>) =
    let dataRoot = args.TryGetResult Data |> Option.defaultWith DataStore.DefaultRoot
    let outDir = args.TryGetResult Out |> Option.defaultValue (Path.Combine("results", "textscale"))
    let threads = args.TryGetResult Threads |> Option.defaultValue 1
    if threads < 1 then raise (UsageError(sprintf "--threads: expected a positive count, got %d" threads))
    // Logs and docs capture the progress lines and tables; do not wrap them at the 80 columns of a redirected stdout.
    if Console.IsOutputRedirected then AnsiConsole.Profile.Width <- 200
    let log (line: string) = AnsiConsole.MarkupLine("[grey]" + Markup.Escape line + "[/]")
    let options = optionsOf args dataRoot log
    MergeDsl.Core.Torch.TorchRuntime.EnsureLoadable() |> ignore
    torch.set_num_threads threads
    try
        let result = executeWith outDir options
        printSummary result
        printfn "reports: %s" (String.Join(", ", reportFiles |> List.map (fun f -> Path.Combine(outDir, f))))
        ExitCode.Ok
    with :? DataNotInstalledException as e ->
        eprintfn "mergedsl: %s" e.Message
        ExitCode.Failed

let run (args: ParseResults<Args>) =
    match args.TryGetResult Combine with
    | Some reports -> combine reports (args.TryGetResult Out |> Option.defaultValue (Path.Combine("results", "textscale")))
    | None -> study args
