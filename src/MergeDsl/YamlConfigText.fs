namespace MergeDsl

open System
open System.Globalization
open System.IO
open YamlDotNet.Core
open YamlDotNet.RepresentationModel

/// What the mergekit and mergekit-moe YAML readers share: one error type carrying the `file:line: problem` line,
/// the loading of a single-document YAML text, and scalar values read with their line.
[<RequireQualifiedAccess>]
module internal YamlConfigText =
    /// A configuration problem, already worded as the one line the user sees.
    exception YamlConfigError of string

    /// Raises the problem at `node`'s line of `file`.
    let fail (file: string) (node: YamlNode) (msg: string) : 'a =
        raise (YamlConfigError $"{file}:{node.Start.Line}: {msg}")

    /// The root node of a YAML text holding exactly one document.
    let root (file: string) (text: string) : YamlNode =
        let stream = YamlStream()
        try
            stream.Load(new StringReader(text))
        with
        | :? YamlException as e -> raise (YamlConfigError $"{file}:{e.Start.Line}: not valid YAML ({e.Message})")
        // Alias resolution can fail with a bare ArgumentException (a repeated key through an alias).
        | :? ArgumentException as e -> raise (YamlConfigError $"{file}: not valid YAML ({e.Message})")
        if stream.Documents.Count <> 1 then
            raise (YamlConfigError $"{file}: expected one YAML document, found {stream.Documents.Count}")
        stream.Documents[0].RootNode

    /// A non-empty scalar's text; `what` names the key in the message.
    let scalar file what (node: YamlNode) =
        match node with
        | :? YamlScalarNode as s when not (isNull s.Value) && s.Value <> "" -> s.Value
        | _ -> fail file node $"{what}: expected a single value"

    /// A finite number.
    let number file what (node: YamlNode) =
        let text = scalar file what node
        match Double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture) with
        | true, x when Double.IsFinite x -> x
        | _ -> fail file node $"{what}: '{text}' is not a number"
