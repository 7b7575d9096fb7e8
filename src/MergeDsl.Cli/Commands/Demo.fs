/// `mergedsl demo`: builds a small deterministic model zoo (a CLIP-ViT-like base and fine-tuned
/// experts, Hugging Face layout) and shows what is in it.
module MergeDsl.Cli.Commands.Demo

open System.IO
open Argu
open Spectre.Console
open MergeDsl.Core.Checkpoints
open MergeDsl.Bench.Demo

type DemoArgs =
    | Out of dir: string
    | Shard_Size of size: string

    interface IArgParserTemplate with
        member this.Usage =
            match this with
            | Out _ -> "folder for the zoo (default ./.mergedsl/demo)."
            | Shard_Size _ -> "shard size of the last expert, written sharded to show sharding (default 32KB)."

let run (args: ParseResults<DemoArgs>) : int =
    let folder = args.GetResult(Out, defaultValue = Path.Combine(".mergedsl", "demo"))
    let shardBytes = ByteSize.Parse(args.GetResult(Shard_Size, defaultValue = "32KB"))
    let out = Inspect.console ()
    let models = DemoZoo.Build(folder, DemoZooConfig(), shardBytes)
    out.WriteLine(sprintf "Model zoo in %s:" (Path.GetFullPath folder))
    for m in models do
        use cp = Checkpoint.Open(m.Folder)
        let t = Inspect.totals cp
        out.WriteLine(
            sprintf "  %-9s %-8s %d tensors, %d parameters, %s in %d shard(s)"
                m.Name (if m.Reused then "reused" else "written") t.Tensors t.Parameters (ByteSize.Format t.Bytes) t.Shards)
    let sharded = models |> Seq.tryFind (fun m -> m.Sharded)
    match sharded with
    | Some m ->
        out.WriteLine()
        out.WriteLine(sprintf "%s, sharded at %s:" m.Name (ByteSize.Format shardBytes))
        use cp = Checkpoint.Open(m.Folder)
        Inspect.printTable out cp
    | None -> ()
    MergeDsl.Cli.Jobs.DemoMerges.print out models
    0
