/// The output tokenizer a mergekit configuration asks for: the models' embedding rows realigned to the output
/// vocabulary (base, union or a named model's) before the merge, and the tokenizer files and chat template
/// written with the weights. Everything here reads only small JSON files, before any tensor data.
module MergeDsl.Cli.Jobs.OutputTokenizer

open System.IO
open MergeDsl.Core.Checkpoints
open MergeDsl.Core.Compilation
open MergeDsl.Core.Models.Decoder.Tokenizers
open MergeDsl.Cli.Jobs.Failure

/// What the configuration said.
type Request =
    { /// The vocabulary source (None: keep the inputs' rows; only a chat template is set).
      Source: TokenizerSourceKind option
      /// The model of `TokenizerSourceKind.Model` (a folder).
      SourceModel: string option
      PadToMultipleOf: int option
      /// Per-token embedding settings (`tokenizer.tokens`).
      Tokens: MergeDsl.MergekitTokenSetting list
      /// "auto" or the template text.
      ChatTemplate: string option }

/// The inputs to merge and what the output gets besides the weights.
type Prepared =
    { Inputs: MergeInputs
      /// The folder config.json and the other small files are copied from.
      CopyFrom: string option
      /// Files written over the copied ones (tokenizer.json, tokenizer_config.json, ...).
      Files: Map<string, string>
      /// Files of CopyFrom left out: slow-tokenizer vocabularies that no longer describe the output's vocabulary.
      Skip: Set<string>
      /// Binary files (folder, name) copied from the model whose tokenizer the output takes.
      AlsoCopy: (string * string) list }

/// The slow (non-tokenizer.json) vocabulary files transformers writes beside tokenizer.json.
let private slowVocabularyFiles =
    [ TokenizerFiles.TokenizerModel; "added_tokens.json"; "vocab.json"; "merges.txt"; "vocab.txt"; "spiece.model"; "sentencepiece.bpe.model" ]

let private folderOf (s: NamedSource) =
    match s.Source with
    | :? Checkpoint as c when not (isNull c.Folder) -> c.Folder
    | _ -> raise (UsageError $"'{s.Label}': a tokenizer merge needs model folders")

let private readIfExists (folder: string) (name: string) =
    let path = Path.Combine(folder, name)
    if File.Exists path then Some(ModelFiles.ReadText(path, folder)) else None

/// mergekit's "auto": the most common chat template among the models (first seen wins a tie), if any has one.
let private autoTemplate (folders: string list) =
    folders
    |> List.choose (fun f ->
        readIfExists f TokenizerFiles.TokenizerConfigJson
        |> Option.bind (fun text ->
            match (VocabularyUnion.ParseObject(text, Path.Combine(f, TokenizerFiles.TokenizerConfigJson)))["chat_template"] with
            | :? System.Text.Json.Nodes.JsonValue as v when v.TryGetValue<string>() |> fst -> Some((v.GetValue<string>()).Trim())
            | _ -> None))
    |> List.countBy id
    |> List.sortByDescending snd
    |> List.tryHead
    |> Option.map fst

/// Applies the request to the opened inputs (None: unchanged).
let prepare (request: Request option) (inputs: MergeInputs) : Prepared =
    match request with
    | None -> { Inputs = inputs; CopyFrom = None; Files = Map.empty; Skip = Set.empty; AlsoCopy = [] }
    | Some req ->
        let all = [ yield! Option.toList (Option.ofObj inputs.Base); yield! inputs.Experts ]
        let folders = all |> List.map folderOf
        let copyFrom = List.head folders
        let template =
            match req.ChatTemplate with
            | Some "auto" -> autoTemplate folders
            | t -> t
        match req.Source with
        | None ->
            let files =
                match template with
                | None -> Map.empty
                | Some t ->
                    let cfg =
                        match readIfExists copyFrom TokenizerFiles.TokenizerConfigJson with
                        | Some text -> VocabularyUnion.ParseObject(text, Path.Combine(copyFrom, TokenizerFiles.TokenizerConfigJson))
                        | None -> System.Text.Json.Nodes.JsonObject()
                    cfg["chat_template"] <- System.Text.Json.Nodes.JsonValue.Create t
                    Map.ofList [ TokenizerFiles.TokenizerConfigJson, VocabularyUnion.Write cfg ]
            { Inputs = inputs; CopyFrom = Some copyFrom; Files = files; Skip = Set.empty; AlsoCopy = [] }
        | Some kind ->
            let hasBase = not (isNull inputs.Base)
            let load (folder: string) =
                try TokenizerVocabulary.Load folder
                with :? System.FormatException as e -> raise (UsageError e.Message)
            let first = load copyFrom
            // mergekit assumes a model without a tokenizer has the base's (the first model's).
            let vocabs =
                folders |> List.mapi (fun i f -> if i = 0 then first elif File.Exists(Path.Combine(f, TokenizerFiles.TokenizerJson)) then load f else first)
            let indexOf (what: string) (m: string) =
                let full = Path.TrimEndingDirectorySeparator(Path.GetFullPath m)
                match folders |> List.tryFindIndex (fun f -> Path.TrimEndingDirectorySeparator(Path.GetFullPath f) = full) with
                | Some i -> i
                | None -> raise (UsageError $"{what} '{m}' is not one of the merged models")
            let sourceIndex =
                match kind, req.SourceModel with
                | TokenizerSourceKind.Model, Some m -> indexOf "tokenizer source" m
                | _ -> 0
            let settings =
                [| for t in req.Tokens ->
                       let what = $"tokenizer.tokens.{t.Token}.source"
                       match t.Source with
                       | MergeDsl.TokenOfModel m -> TokenEmbeddingSetting(t.Token, TokenEmbeddingKind.Model, indexOf what m, Force = t.Force)
                       | MergeDsl.TokenIdOfModel(m, id) ->
                           TokenEmbeddingSetting(t.Token, TokenEmbeddingKind.ModelToken, indexOf what m, SourceTokenId = System.Nullable id, Force = t.Force)
                       | MergeDsl.OtherTokenOfModel(m, other) ->
                           TokenEmbeddingSetting(t.Token, TokenEmbeddingKind.ModelToken, indexOf what m, SourceToken = other, Force = t.Force)
                       | MergeDsl.ZeroRow -> TokenEmbeddingSetting(t.Token, TokenEmbeddingKind.Zero, Force = t.Force) |]
            let union =
                try VocabularyUnion.Build(Array.ofList vocabs, (if hasBase then System.Nullable 0 else System.Nullable()), kind, sourceIndex, Option.toNullable req.PadToMultipleOf, settings)
                with :? System.FormatException as e -> raise (UsageError e.Message)
            let sources = all |> List.map (fun s -> s.Source) |> Array.ofList
            let aligned = all |> List.mapi (fun i s -> NamedSource(s.Label, new AlignedEmbeddingSource(sources, i, union)))
            let inputs =
                MergeInputs((if hasBase then aligned.Head else null), (if hasBase then aligned.Tail else aligned) |> Array.ofList)
            let tokFolder = union.TokenizerFolder
            // A named model's tokenizer replaces the copied (base's) one, with its slow vocabulary files (as mergekit's
            // save_pretrained of that tokenizer writes them).
            let fromSource =
                if kind = TokenizerSourceKind.Model && tokFolder <> copyFrom then
                    [ TokenizerFiles.TokenizerJson; TokenizerFiles.TokenizerConfigJson; "special_tokens_map.json" ]
                    |> List.choose (fun n -> readIfExists tokFolder n |> Option.map (fun t -> n, t))
                else []
            // mergekit's union tokenizer goes through a fast-only save (legacy_format=False), so its output has no
            // tokenizer.model; a vocabulary grown by tokenizer.tokens would make the source's stale as well.
            let slowKept = kind <> TokenizerSourceKind.Union && not union.AddsTokens
            let skip = if slowKept && tokFolder = copyFrom then Set.empty else Set.ofList slowVocabularyFiles
            let alsoCopy =
                if slowKept && tokFolder <> copyFrom then
                    slowVocabularyFiles |> List.filter (fun n -> File.Exists(Path.Combine(tokFolder, n))) |> List.map (fun n -> tokFolder, n)
                else []
            let rebuilt = union.OutputFiles(Option.toObj (readIfExists tokFolder TokenizerFiles.TokenizerConfigJson), Option.toObj template)
            let files = Map.ofList (fromSource @ [ for kv in rebuilt -> kv.Key, kv.Value ])
            { Inputs = inputs; CopyFrom = Some copyFrom; Files = files; Skip = skip; AlsoCopy = alsoCopy }
