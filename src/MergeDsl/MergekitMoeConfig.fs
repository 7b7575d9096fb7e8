namespace MergeDsl

open System
open System.Globalization
open System.IO
open YamlDotNet.Core
open YamlDotNet.RepresentationModel
open MergeDsl.Core.Checkpoints
open MergeDsl.Core.Moe.Sparse.Upcycling

[<RequireQualifiedAccess>]
module MergekitMoeConfig =
    let private fail file node msg : 'a = YamlConfigText.fail file node msg
    let private scalar = YamlConfigText.scalar
    let private number = YamlConfigText.number

    let private integer file what (node: YamlNode) =
        let text = scalar file what node
        match Int32.TryParse(text, NumberStyles.Integer, CultureInfo.InvariantCulture) with
        | true, n -> n
        | _ -> fail file node $"{what}: '{text}' is not an integer"

    let private strings file what (node: YamlNode) =
        match node with
        | :? YamlSequenceNode as s -> [ for c in s.Children -> scalar file what c ]
        | :? YamlScalarNode as s when isNull s.Value || s.Value = "" -> []
        | :? YamlScalarNode -> [ scalar file what node ]
        | _ -> fail file node $"{what}: expected a list of texts"

    let private entries file (node: YamlNode) what =
        match node with
        | :? YamlMappingNode as m -> [ for kv in m.Children -> scalar file "key" kv.Key, kv.Key, kv.Value ]
        | _ -> fail file node $"{what}: expected a mapping"

    let private resolve (file: string) (node: YamlNode) (what: string) (text: string) =
        let yamlDir = Path.GetDirectoryName(Path.GetFullPath file)
        let r =
            try ModelReference.Resolve(text, [| yamlDir; Directory.GetCurrentDirectory() |])
            with :? ModelReferenceException as e -> fail file node $"{what}: {e.Message}"
        if not (isNull r.Adapter) then fail file node $"{what}: {text}: a model+adapter reference is not accepted by mergekit-moe; merge it into a folder first"
        r.Folder

    let private expertKeys = [ "source_model"; "positive_prompts"; "negative_prompts"; "noise_scale"; "residual_scale" ]

    let private parseExpert file (where: string) (node: YamlNode) : SparseMoeExpert =
        let mutable model = None
        let mutable e = Upcycle.expert "" []
        for key, keyNode, v in entries file node where do
            match key with
            | "source_model" -> model <- Some(resolve file v $"{where}.source_model" (scalar file $"{where}.source_model" v))
            | "positive_prompts" -> e <- { e with Positive = strings file $"{where}.positive_prompts" v }
            | "negative_prompts" -> e <- { e with Negative = strings file $"{where}.negative_prompts" v }
            | "noise_scale" -> e <- { e with NoiseScale = Some(number file $"{where}.noise_scale" v) }
            | "residual_scale" -> e <- { e with ResidualScale = Some(number file $"{where}.residual_scale" v) }
            | other ->
                let known = String.Join(", ", expertKeys)
                fail file keyNode $"{where}: unknown key '{other}' (an expert takes: {known})"
        match model with
        | Some m -> { e with Model = m }
        | None -> fail file node $"{where}: source_model is missing"

    let private expertList file what (node: YamlNode) =
        match node with
        | :? YamlSequenceNode as s -> s.Children |> Seq.mapi (fun i c -> parseExpert file $"{what}[{i}]" c) |> List.ofSeq
        | :? YamlScalarNode as s when isNull s.Value || s.Value = "" -> []
        | _ -> fail file node $"{what}: expected a list of experts"

    let private topKeys = [ "base_model"; "gate_mode"; "experts_per_token"; "experts"; "shared_experts"; "dtype"; "architecture" ]

    let private root file text = YamlConfigText.root file text

    let isMoeConfig (text: string) =
        try
            match root "config" text with
            | :? YamlMappingNode as m ->
                let keys = [ for kv in m.Children -> (kv.Key :?> YamlScalarNode).Value ]
                List.contains "experts" keys && not (keys |> List.exists (fun k -> k = "merge_method" || k = "models" || k = "slices"))
            | _ -> false
        with _ -> false

    let parse (file: string) (text: string) : Result<SparseMoeSpec, string> =
        try
            let node = root file text
            let mutable spec = Upcycle.defaults
            let mutable seen = Set.empty
            let mutable expertsNode = None
            for key, keyNode, v in entries file node "configuration" do
                if seen.Contains key then fail file keyNode $"'{key}' is given twice"
                seen <- seen.Add key
                match key with
                | "base_model" -> spec <- { spec with Base = resolve file v "base_model" (scalar file "base_model" v) }
                | "gate_mode" ->
                    match Upcycle.parseGate (scalar file "gate_mode" v) with
                    | Ok g -> spec <- { spec with Gate = g }
                    | Error msg -> fail file v $"gate_mode: {msg}"
                | "experts_per_token" -> spec <- { spec with ExpertsPerToken = integer file "experts_per_token" v }
                | "experts" ->
                    expertsNode <- Some v
                    spec <- { spec with Experts = expertList file "experts" v }
                | "shared_experts" -> spec <- { spec with Shared = expertList file "shared_experts" v }
                | "dtype" ->
                    let d = (scalar file "dtype" v).ToLowerInvariant()
                    match d with
                    | "float32" | "fp32" | "f32" | "float16" | "fp16" | "f16" | "half" | "bfloat16" | "bf16" -> spec <- { spec with DType = Some d }
                    | _ -> fail file v $"dtype: unknown dtype '{d}' (expected float32, float16 or bfloat16)"
                | "architecture" ->
                    let name = scalar file "architecture" v
                    let found =
                        try UpcycleArchitectures.Select name
                        with :? MergeDsl.Core.SettingException as e -> fail file v $"architecture: {e.Problem}"
                    let format =
                        match found[0] with
                        | UpcycleArchitecture.Mixtral -> Mixtral
                        | UpcycleArchitecture.Qwen2Moe -> Qwen2Moe
                        | _ -> DeepseekMoe
                    spec <- { spec with Format = Some format }
                | other ->
                    let known = String.Join(", ", topKeys)
                    fail file keyNode $"unknown key '{other}' (a mergekit-moe configuration takes: {known})"
            if not (seen.Contains "base_model") then raise (YamlConfigText.YamlConfigError $"{file}: base_model is missing")
            if List.isEmpty spec.Experts then
                match expertsNode with
                | Some n -> fail file n "experts: give at least one expert"
                | None -> raise (YamlConfigText.YamlConfigError $"{file}: experts is missing")
            Ok spec
        with YamlConfigText.YamlConfigError msg -> Error msg

    let load (file: string) =
        if not (File.Exists file) then Error $"{file}: no such configuration file"
        else parse file (File.ReadAllText file)

    let private quote (s: string) =
        "\"" + s.Replace("\\", "\\\\").Replace("\"", "\\\"").Replace("\n", "\\n").Replace("\r", "\\r").Replace("\t", "\\t") + "\""

    let private fnum (x: float) = x.ToString("R", CultureInfo.InvariantCulture) |> fun s -> if s.Contains '.' || s.Contains 'E' then s else s + ".0"

    let private expertText (e: SparseMoeExpert) =
        let list xs = "[ " + String.Join("; ", xs |> List.map quote) + " ]"
        let opt = function Some x -> $"Some {fnum x}" | None -> "None"
        $"{{ Model = {quote e.Model}; Positive = {list e.Positive}; Negative = {list e.Negative}; NoiseScale = {opt e.NoiseScale}; ResidualScale = {opt e.ResidualScale} }}"

    let toFSharp (spec: SparseMoeSpec) =
        let b = Text.StringBuilder()
        let line (s: string) = b.Append(s).Append('\n') |> ignore
        line "// Generated by `mergedsl import` from a mergekit-moe configuration."
        line "open MergeDsl"
        line ""
        line "let spec ="
        line "    sparseMoe {"
        line $"        base_model {quote spec.Base}"
        line $"        gate_mode {spec.Gate}"
        line $"        experts_per_token {spec.ExpertsPerToken}"
        for e in spec.Experts do line $"        add_expert {expertText e}"
        for e in spec.Shared do line $"        shared_expert {expertText e}"
        spec.DType |> Option.iter (fun d -> line $"        dtype {quote d}")
        spec.Format |> Option.iter (fun f -> line $"        architecture {f}")
        line "    }"
        line ""
        line "// Writes the checkpoint (the output folder must not exist):"
        line "// Upcycle.upscaleToMoE spec \"out\" false"
        b.ToString()
