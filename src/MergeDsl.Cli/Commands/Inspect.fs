/// `mergedsl inspect PATH [--json]`: what a checkpoint holds, after validating every header.
module MergeDsl.Cli.Commands.Inspect

open System
open System.IO
open System.Text.Json
open Argu
open Spectre.Console
open MergeDsl.Core.Checkpoints
open MergeDsl.Core.Text

type InspectArgs =
    | [<MainCommand; ExactlyOnce>] Path of path: string
    | Json

    interface IArgParserTemplate with
        member this.Usage =
            match this with
            | Path _ -> "a .safetensors file, a model.safetensors.index.json, or a Hugging Face model folder."
            | Json -> "print JSON instead of a table."

/// Totals over a checkpoint's tensors.
type Totals =
    { Tensors: int
      Parameters: int64
      Bytes: int64
      Shards: int
      MetadataKeys: int }

let totals (cp: Checkpoint) =
    { Tensors = cp.Tensors.Count
      Parameters = cp.Tensors |> Seq.sumBy (fun t -> t.ElementCount)
      Bytes = cp.TotalBytes
      Shards = cp.Shards.Count
      MetadataKeys = cp.Metadata.Count }

/// A console writing to the current stdout; piped output gets wide lines instead of wrapped names.
let console () =
    let c = AnsiConsole.Create(AnsiConsoleSettings(Out = AnsiConsoleOutput(Console.Out)))
    if Console.IsOutputRedirected then c.Profile.Width <- 200
    c

let private shapeText (shape: int64[]) = "[" + String.Join(", ", shape) + "]"

/// Longest tensor name shown in a table cell; longer ones end with an ellipsis and their length.
/// A cell wraps, so one huge name would otherwise become thousands of lines (and seconds of layout).
[<Literal>]
let NameCellLength = 120

/// Text from the checkpoint, safe for a terminal (escaped controls, bounded length).
let private safe (maxLength: int) (s: string) = TerminalText.Sanitize(s, maxLength)

/// The table of tensors, then a totals line.
let printTable (out: IAnsiConsole) (cp: Checkpoint) =
    let table = Table().Border(TableBorder.Rounded)
    table.Title <- TableTitle(Markup.Escape(safe 400 cp.Path))
    table.AddColumn(TableColumn("tensor")) |> ignore
    table.AddColumn(TableColumn("dtype")) |> ignore
    table.AddColumn(TableColumn("shape")) |> ignore
    table.AddColumn(TableColumn("bytes").RightAligned()) |> ignore
    if cp.Shards.Count > 1 then table.AddColumn(TableColumn("shard")) |> ignore
    for t in cp.Tensors do
        let cells =
            [ safe NameCellLength t.Name; DTypes.ToSafetensorsName t.DType; shapeText t.Shape; ByteSize.Format t.ByteLength ]
            @ (if cp.Shards.Count > 1 then [ safe NameCellLength (IO.Path.GetFileName t.File) ] else [])
        table.AddRow(cells |> List.map (fun s -> Text(s) :> Rendering.IRenderable) |> Array.ofList) |> ignore
    out.Write table
    let t = totals cp
    out.WriteLine(
        sprintf "%d tensors, %s parameters, %s (%d bytes), %d shard(s), %d metadata key(s)"
            t.Tensors (t.Parameters.ToString("N0", Globalization.CultureInfo.InvariantCulture)) (ByteSize.Format t.Bytes) t.Bytes t.Shards t.MetadataKeys)
    for KeyValue(k, v) in cp.Metadata |> Seq.sortBy (fun kv -> kv.Key) do
        out.WriteLine(sprintf "  %s = %s" (safe NameCellLength k) (safe TerminalText.DefaultMaxLength v))

/// The same content as JSON, names exact; control and invisible format characters (ESC, U+202E) are JSON escapes.
let writeJson (writer: TextWriter) (cp: Checkpoint) =
    use stream = new MemoryStream()
    (use w = new Utf8JsonWriter(stream, JsonWriterOptions(Indented = true, Encoder = TerminalJsonEncoder.Instance))
     w.WriteStartObject()
     w.WriteString("path", cp.Path)
     w.WriteStartArray("shards")
     for s in cp.Shards do w.WriteStringValue(IO.Path.GetFileName s)
     w.WriteEndArray()
     w.WriteStartObject("metadata")
     for KeyValue(k, v) in cp.Metadata |> Seq.sortBy (fun kv -> kv.Key) do w.WriteString(k, v)
     w.WriteEndObject()
     w.WriteStartArray("tensors")
     for t in cp.Tensors do
         w.WriteStartObject()
         w.WriteString("name", t.Name)
         w.WriteString("dtype", DTypes.ToSafetensorsName t.DType)
         w.WriteStartArray("shape")
         for d in t.Shape do w.WriteNumberValue d
         w.WriteEndArray()
         w.WriteNumber("bytes", t.ByteLength)
         w.WriteString("file", IO.Path.GetFileName t.File)
         w.WriteEndObject()
     w.WriteEndArray()
     let t = totals cp
     w.WriteStartObject("totals")
     w.WriteNumber("tensors", t.Tensors)
     w.WriteNumber("parameters", t.Parameters)
     w.WriteNumber("bytes", t.Bytes)
     w.WriteNumber("shards", t.Shards)
     w.WriteNumber("metadata_keys", t.MetadataKeys)
     w.WriteEndObject()
     w.WriteEndObject())
    writer.WriteLine(Text.Encoding.UTF8.GetString(stream.ToArray()))

/// Runs the command; malformed checkpoints raise CheckpointFormatException, which `guard` prints as one line.
let run (args: ParseResults<InspectArgs>) : int =
    let given = args.GetResult Path
    // Only what is not on disk and reads as a repo id goes to the cache; a missing path stays a runtime error (exit 1).
    let path =
        if File.Exists given || Directory.Exists given || Path.IsPathRooted given || not (HubCache.LooksLikeRepoId given) then given
        else MergeDsl.Cli.Jobs.JobInputs.modelFolder "inspect" given
    use cp = Checkpoint.Open(path)
    if args.Contains Json then writeJson Console.Out cp else printTable (console ()) cp
    0
