module MergeDsl.ScriptParams

open System
open System.Collections.Concurrent
open System.Globalization

let private values = ConcurrentDictionary<string, string>(StringComparer.OrdinalIgnoreCase)
let private asked = ConcurrentDictionary<string, unit>(StringComparer.OrdinalIgnoreCase)

let reset (settings: seq<string * string>) =
    values.Clear()
    asked.Clear()
    for k, v in settings do
        values[k] <- v

let unread () =
    values.Keys |> Seq.filter (fun k -> not (asked.ContainsKey k)) |> Seq.sort |> List.ofSeq

let private raw name =
    asked[name] <- ()
    match values.TryGetValue name with
    | true, v -> Some v
    | _ -> None

let float (name: string) (defaultValue: float) : float =
    match raw name with
    | None -> defaultValue
    | Some v ->
        match Double.TryParse(v, NumberStyles.Float, CultureInfo.InvariantCulture) with
        | true, x -> x
        | _ -> invalidArg name (sprintf "--set %s=%s: not a number" name v)

let int (name: string) (defaultValue: int) : int =
    match raw name with
    | None -> defaultValue
    | Some v ->
        match Int32.TryParse(v, NumberStyles.Integer, CultureInfo.InvariantCulture) with
        | true, x -> x
        | _ -> invalidArg name (sprintf "--set %s=%s: not an integer" name v)

let string (name: string) (defaultValue: string) : string = raw name |> Option.defaultValue defaultValue

let choice (name: string) (choices: string list) (defaultValue: string) : string =
    let v = string name defaultValue
    match choices |> List.tryFind (fun c -> String.Equals(c, v, StringComparison.OrdinalIgnoreCase)) with
    | Some c -> c
    | None -> invalidArg name (sprintf "--set %s=%s: expected one of %s" name v (String.Join(", ", choices)))

let numbers (name: string) : float list =
    match raw name with
    | None -> invalidArg name (sprintf "--set %s=...: required (comma-separated numbers)" name)
    | Some v ->
        let parts = v.Split([| ','; ' ' |], StringSplitOptions.RemoveEmptyEntries)
        if parts.Length = 0 then invalidArg name (sprintf "--set %s=%s: no numbers given" name v)
        [ for p in parts ->
            match Double.TryParse(p, NumberStyles.Float, CultureInfo.InvariantCulture) with
            | true, x when Double.IsFinite x -> x
            | _ -> invalidArg name (sprintf "--set %s=%s: '%s' is not a number" name v p) ]

let parseSetting (text: string) : string * string =
    match text.IndexOf '=' with
    | i when i > 0 -> text.Substring(0, i).Trim(), text.Substring(i + 1).Trim()
    | _ -> invalidArg "--set" (sprintf "--set %s: expected name=value" text)

let density (defaultValue: float) : float =
    let d = float "density" defaultValue
    if not (d > 0.0 && d <= 1.0) then
        invalidArg "density" (sprintf "parameter 'density': %s is outside (0, 1]" (d.ToString("R", CultureInfo.InvariantCulture)))
    d
