/// The `--combine` option of the benchmarks whose seeds can run as separate processes: the single-seed reports it
/// names, read back and checked by the benchmark's own reader and combiner.
module MergeDsl.Cli.Commands.CombineArgs

open System
open System.IO
open MergeDsl.Cli.Jobs.Failure

/// Reads the reports named in `text` (comma-separated folders holding results.json, or the files) with `read`, then
/// combines them with `combine`. A missing report, a report in `outDir` (writing there would overwrite an input), one
/// `read` rejects (InvalidDataException) or parts `combine` refuses (ArgumentException) are one-line usage errors
/// naming the report; nothing is written before this returns.
let combined (read: string -> 'Report) (combine: Collections.Generic.List<struct (string * 'Report)> -> 'Result) (text: string) (outDir: string) : 'Result =
    let out = Path.GetFullPath outDir
    let parts =
        [ for item in text.Split(',', StringSplitOptions.RemoveEmptyEntries ||| StringSplitOptions.TrimEntries) ->
              let file = if Directory.Exists item then Path.Combine(item, "results.json") else item
              if not (File.Exists file) then raise (UsageError(sprintf "--combine: %s: no such report" file))
              if Path.GetDirectoryName(Path.GetFullPath file) = out.TrimEnd(Path.DirectorySeparatorChar) then
                  raise (UsageError(sprintf "--out: %s holds %s, a report --combine reads; write the combined reports to another folder" outDir file))
              try
                  struct (file, read file)
              with :? InvalidDataException as e ->
                  raise (UsageError(sprintf "--combine: %s" e.Message)) ]
    try
        combine (Collections.Generic.List parts)
    with :? ArgumentException as e ->
        raise (UsageError e.Message)
