/// Mutation fuzzing of the safetensors header validator and the index parser, in process: random
/// mutations of valid files (bit flips, byte insert/delete, truncation, header-length edits, JSON
/// splices) must each end in a clean CheckpointFormatException or a result that is really valid;
/// anything else (another exception, an accepted file whose tensors leave the data area) is a crash.
/// Run 100,000+ cases with `dotnet run --project tests/MergeDsl.Tests -c Release -- --fuzz 100000`.
module MergeDsl.Tests.CheckpointFuzz

open System
open System.Diagnostics
open System.Text
open System.Threading
open MergeDsl.Core.Checkpoints

/// What a fuzz run found.
type FuzzReport =
    { Cases: int
      Rejected: int
      Accepted: int
      /// Case number, input kind and what went wrong (an exception other than CheckpointFormatException,
      /// or an accepted input that breaks an invariant).
      Crashes: (int * string * string) list
      /// A case that ran longer than the hang limit (the run stops there).
      Hangs: int
      SlowestCaseMs: float
      Wall: TimeSpan }

let private header (json: string) =
    let h = Encoding.UTF8.GetBytes json
    let padded = Array.append h (Array.create ((8 - h.Length % 8) % 8) (byte ' '))
    padded

let private file (json: string) (dataBytes: int) =
    let h = header json
    Array.concat [ BitConverter.GetBytes(uint64 h.Length); h; Array.init dataBytes byte ]

/// Valid safetensors files exercising every part of the validator (dtypes, scalars, empty tensors, metadata).
let seedFiles =
    [| file """{"__metadata__":{"format":"pt","note":"x"},"a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},"b":{"dtype":"BF16","shape":[4],"data_offsets":[24,32]},"c":{"dtype":"I64","shape":[],"data_offsets":[32,40]}}""" 40
       file """{"z":{"dtype":"F16","shape":[0,5],"data_offsets":[0,0]},"m":{"dtype":"BOOL","shape":[3],"data_offsets":[0,3]},"e":{"dtype":"F8_E4M3","shape":[1,1],"data_offsets":[3,4]},"u":{"dtype":"U8","shape":[2,2],"data_offsets":[4,8]}}""" 8
       file """{"w":{"dtype":"F64","shape":[1,2,1],"data_offsets":[0,16]},"v":{"dtype":"I32","shape":[2],"data_offsets":[16,24]},"s":{"dtype":"I16","shape":[1],"data_offsets":[24,26]},"t":{"dtype":"I8","shape":[2],"data_offsets":[26,28]},"q":{"dtype":"F8_E5M2","shape":[4],"data_offsets":[28,32]}}""" 32
       file """{}""" 0 |]

/// Valid index files.
let seedIndexes =
    [| Encoding.UTF8.GetBytes """{"metadata":{"total_size":64},"weight_map":{"a":"model-00001-of-00002.safetensors","b.weight":"model-00002-of-00002.safetensors","c":"model-00001-of-00002.safetensors"}}"""
       Encoding.UTF8.GetBytes """{"weight_map":{}}""" |]

/// Fragments spliced into JSON: structure, edge numbers, dtype names, keys, bad UTF-8, control bytes.
let private splices =
    [| "\""; "{"; "}"; "["; "]"; ","; ":"; "-1"; "0"; "1e400"; "1.5"; "18446744073709551616"; "9223372036854775807"
       "\"F8_E4M3\""; "\"F32\""; "\"f32\""; "\"dtype\""; "\"shape\""; "\"data_offsets\""; "\"__metadata__\""
       "\"weight_map\""; "\"../x\""; "\"a/b\""; "null"; "true"; "\\u0000"; "\\ud800"; "\u00e9"; "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["
       "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}"; "[0,4]"; "[4,0]"; "[0,1e3]"; "  "; "\n" |]
    |> Array.map Encoding.UTF8.GetBytes
    |> Array.append [| [| 0xC3uy; 0x28uy |]; [| 0xFFuy |]; [| 0uy |]; [| 0xEDuy; 0xA0uy; 0x80uy |] |]

let private mutate (rng: Random) (input: byte[]) (headerAware: bool) : byte[] =
    let b = ResizeArray<byte>(input)
    let pos () = if b.Count = 0 then 0 else rng.Next(b.Count)
    let rounds = 1 + (if rng.Next 4 = 0 then rng.Next 4 else 0)
    for _ in 1..rounds do
        match rng.Next(if headerAware then 7 else 6) with
        | 0 -> // bit flips
            for _ in 1 .. 1 + rng.Next 8 do
                if b.Count > 0 then
                    let p = pos ()
                    b[p] <- b[p] ^^^ (1uy <<< rng.Next 8)
        | 1 -> // byte inserts
            for _ in 1 .. 1 + rng.Next 4 do b.Insert(rng.Next(b.Count + 1), byte (rng.Next 256))
        | 2 -> // byte deletes
            for _ in 1 .. 1 + rng.Next 4 do
                if b.Count > 0 then b.RemoveAt(pos ())
        | 3 -> // truncation
            if b.Count > 0 then
                let keep = rng.Next b.Count
                b.RemoveRange(keep, b.Count - keep)
        | 4 | 5 -> // JSON splice: replace a span with a fragment
            let s = splices[rng.Next splices.Length]
            let start = if headerAware then 8 + rng.Next(max 1 (b.Count - 8)) else pos ()
            let start = min start b.Count
            let len = min (rng.Next 6) (b.Count - start)
            b.RemoveRange(start, len)
            b.InsertRange(start, s)
        | _ -> // header-length edit
            if b.Count >= 8 then
                let declared = BitConverter.ToUInt64(b.GetRange(0, 8).ToArray(), 0)
                let v =
                    match rng.Next 6 with
                    | 0 -> declared + uint64 (rng.Next 16)
                    | 1 -> declared - uint64 (rng.Next 16)
                    | 2 -> uint64 (rng.NextInt64())
                    | 3 -> 0UL
                    | 4 -> uint64 (b.Count - 8)
                    | _ -> UInt64.MaxValue - uint64 (rng.Next 16)
                let bytes = BitConverter.GetBytes v
                for k in 0..7 do b[k] <- bytes[k]
    // Often keep the length prefix consistent with a changed header, so mutations reach the JSON parser.
    if headerAware && b.Count >= 8 && rng.Next 2 = 0 then
        let declared = BitConverter.ToUInt64(b.GetRange(0, 8).ToArray(), 0)
        let delta = b.Count - input.Length
        let fixedLen = int64 declared + int64 delta
        if fixedLen >= 0L then
            let bytes = BitConverter.GetBytes(uint64 fixedLen)
            for k in 0..7 do b[k] <- bytes[k]
    b.ToArray()

/// One case: Some problem when it crashed, None when it was rejected cleanly or accepted validly.
let private check (isIndex: bool) (bytes: byte[]) : Result<bool, string> =
    try
        if isIndex then
            Checkpoint.ParseIndex("fuzz.index.json", ReadOnlySpan bytes) |> ignore
            Ok true
        else
            let h = SafetensorsHeader.Validate("fuzz.safetensors", ReadOnlySpan bytes, int64 bytes.Length)
            let dataStart = 8L + h.HeaderLength
            let bad =
                h.Tensors
                |> Seq.tryFind (fun t -> t.DataOffset < dataStart || t.DataOffset + t.ByteLength > int64 bytes.Length)
            match bad with
            | Some t -> Error $"accepted tensor '{t.Name}' outside the data area"
            | None -> Ok true
    with
    | :? CheckpointFormatException as e when not (e.Message.Contains '\n') -> Ok false
    | e -> Error $"{e.GetType().Name}: {e.Message}"

/// Runs <cases> mutations from a seed; stops (counting a hang) if one case takes longer than hangLimit.
let run (cases: int) (seed: int) (hangLimit: TimeSpan) : FuzzReport =
    let rng = Random seed
    let rejected, accepted, doneCases = ref 0, ref 0, ref 0
    let crashes = ResizeArray()
    let slowest = ref 0.0
    // Stopwatch ticks when the current case started; 0 between cases (the watchdog reads it).
    let started = ref 0L
    let clock = Stopwatch.StartNew()
    let worker =
        Thread(
            (fun () ->
                for i in 0 .. cases - 1 do
                    let isIndex = rng.Next 4 = 0
                    let input =
                        if isIndex then mutate rng seedIndexes[rng.Next seedIndexes.Length] false
                        else mutate rng seedFiles[rng.Next seedFiles.Length] true
                    let t0 = clock.ElapsedTicks
                    Interlocked.Exchange(started, max 1L t0) |> ignore
                    match check isIndex input with
                    | Ok true -> accepted.Value <- accepted.Value + 1
                    | Ok false -> rejected.Value <- rejected.Value + 1
                    | Error why -> crashes.Add(i, (if isIndex then "index" else "safetensors"), why)
                    slowest.Value <- max slowest.Value (float (clock.ElapsedTicks - t0) * 1000.0 / float Stopwatch.Frequency)
                    Interlocked.Exchange(started, 0L) |> ignore
                    Interlocked.Exchange(doneCases, i + 1) |> ignore),
            IsBackground = true,
            Name = "mergedsl-fuzz"
        )
    worker.Start()
    let mutable hangs = 0
    while worker.IsAlive && hangs = 0 do
        worker.Join 200 |> ignore
        let s = Interlocked.Read &started.contents
        if s <> 0L && float (clock.ElapsedTicks - s) / float Stopwatch.Frequency > hangLimit.TotalSeconds then
            hangs <- 1
    let finished = hangs = 0
    { Cases = doneCases.Value
      Rejected = (if finished then rejected.Value else 0)
      Accepted = (if finished then accepted.Value else 0)
      Crashes = (if finished then List.ofSeq crashes else [])
      Hangs = hangs
      SlowestCaseMs = slowest.Value
      Wall = clock.Elapsed }

/// The CPU model from /proc/cpuinfo (for the report).
let cpuModel () =
    try
        IO.File.ReadLines "/proc/cpuinfo"
        |> Seq.tryFind (fun l -> l.StartsWith "model name")
        |> Option.map (fun l -> l.Substring(l.IndexOf ':' + 1).Trim())
        |> Option.defaultValue "unknown"
    with _ -> "unknown"

/// `--fuzz N [--seed S]`: runs N cases and prints the figures; exit 0 only with no crash and no hang.
let main (cases: int) (seed: int) =
    printfn "fuzzing the safetensors header validator and the index parser: %d cases, seed %d" cases seed
    let r = run cases seed (TimeSpan.FromSeconds 10.0)
    printfn "cases %d, clean rejections %d, accepted %d, crashes %d, hangs %d" r.Cases r.Rejected r.Accepted r.Crashes.Length r.Hangs
    printfn "wall %.1f s, slowest case %.2f ms, CPU %s, %d cores" r.Wall.TotalSeconds r.SlowestCaseMs (cpuModel ()) Environment.ProcessorCount
    for (i, kind, why) in r.Crashes |> List.truncate 20 do
        printfn "  crash: case %d (%s): %s" i kind why
    if r.Crashes.IsEmpty && r.Hangs = 0 && r.Cases = cases then 0 else 1
