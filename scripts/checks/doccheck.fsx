// Every public type and member of the given assemblies must have an XML doc (a <member> entry in the .xml
// file beside the assembly, or, for a C# positional record's property, a <param> of its record).
// The F# compiler has no missing-doc warning, so this is the check for the F# DSL; for the C# core it
// complements CS1591. Members are matched by name (overloads share a verdict: one documented overload
// passes the others). Exit status 1 and one line per undocumented member when any is missing.
//   dotnet fsi scripts/checks/doccheck.fsx path/to/A.dll [path/to/B.dll=other/B.xml ...]
open System
open System.IO
open System.Reflection
open System.Xml.Linq

let flags = BindingFlags.Public ||| BindingFlags.Instance ||| BindingFlags.Static ||| BindingFlags.DeclaredOnly

let hasAttr (name: string) (m: MemberInfo) =
    m.CustomAttributes |> Seq.exists (fun a -> a.AttributeType.Name = name)

// The kind in F#'s CompilationMappingAttribute(SourceConstructFlags, ...): 1 = SumType (union), 2 = RecordType,
// 4 = Field, 7 = Module, 8 = UnionCase, 9 = Value; the bits above KindMask (31) are flags.
let fsharpKind (m: MemberInfo) =
    m.CustomAttributes
    |> Seq.tryFind (fun a -> a.AttributeType.Name = "CompilationMappingAttribute" && a.ConstructorArguments.Count > 0)
    |> Option.map (fun a -> Convert.ToInt32 a.ConstructorArguments.[0].Value &&& 31)

let docName (t: Type) = (if isNull t.Namespace then "" else t.Namespace + ".") + (t.FullName.Substring(if isNull t.Namespace then 0 else t.Namespace.Length + 1).Replace('+', '.'))

// An argument is A.dll (docs in A.xml beside it) or A.dll=docs.xml.
let check (arg: string) =
    let dll, xmlPath =
        match arg.Split('=', 2) with
        | [| d; x |] -> d, x
        | _ -> arg, Path.ChangeExtension(arg, ".xml")
    if not (File.Exists xmlPath) then [ $"{dll}: no XML doc file {xmlPath} (GenerateDocumentationFile)" ] else
    let entries =
        XDocument.Load(xmlPath).Descendants(XName.Get "member")
        |> Seq.map (fun e -> e.Attribute(XName.Get "name").Value, e)
        // text, or an element such as <inheritdoc/>
        |> Seq.filter (fun (_, e) -> not (String.IsNullOrWhiteSpace e.Value) || Seq.exists (fun _ -> true) (e.Elements()))
        |> dict
    let names = entries.Keys |> Seq.toArray
    let documented (prefix: string) (name: string) =
        let full = prefix + name
        entries.ContainsKey full || names |> Array.exists (fun n -> n.StartsWith(full + "(") || n.StartsWith(full + "``"))
    let paramOf (t: Type) (prop: string) =
        match entries.TryGetValue("T:" + docName t) with
        | true, e -> e.Elements(XName.Get "param") |> Seq.exists (fun p -> p.Attribute(XName.Get "name").Value = prop)
        | _ -> false
    let asm = Assembly.LoadFrom(Path.GetFullPath dll)
    let visible (t: Type) =
        t.IsPublic || (t.IsNestedPublic && not (isNull t.DeclaringType))
    let rec publicly (t: Type) = visible t && (isNull t.DeclaringType || publicly t.DeclaringType)
    let types =
        asm.GetTypes()
        |> Array.filter (fun t -> publicly t && not (hasAttr "CompilerGeneratedAttribute" t))
        // union case classes and Tags of an F# union are documented as the union's cases
        |> Array.filter (fun t -> isNull t.DeclaringType || fsharpKind t.DeclaringType <> Some 1)
    [ for t in types do
        let tn = docName t
        if not (documented "T:" tn) then yield $"type {tn}"
        let kind = fsharpKind t
        if kind = Some 1 then
            // F# union: each case is documented as T:Union.Case
            // (the case mark is on get_Case for a case without fields, on NewCase for one with fields)
            for m in t.GetMethods(flags) do
                if fsharpKind m = Some 8 then
                    let case = if m.Name.StartsWith "get_" then m.Name.Substring 4 elif m.Name.StartsWith "New" then m.Name.Substring 3 else m.Name
                    if not (documented "T:" (tn + "." + case)) then yield $"union case {tn}.{case}"
        let isDelegate = typeof<Delegate>.IsAssignableFrom t
        if not isDelegate then
            for m in t.GetMembers(flags) do
                let skip =
                    hasAttr "CompilerGeneratedAttribute" m
                    || (fsharpKind m = Some 8)
                    || (match m with
                        | :? MethodInfo as mi -> mi.IsSpecialName || mi.IsPrivate || mi.IsAssembly || mi.IsFamilyAndAssembly || (mi.IsVirtual && mi.GetBaseDefinition().DeclaringType <> t)
                        | :? ConstructorInfo as c -> not (c.IsPublic || c.IsFamily)
                        | :? PropertyInfo as p ->
                            let g = p.GetMethod
                            isNull g || not (g.IsPublic || g.IsFamily) || (g.IsVirtual && g.GetBaseDefinition().DeclaringType <> t)
                        | :? FieldInfo as f -> not (f.IsPublic || f.IsFamily) || f.IsSpecialName
                        | :? EventInfo -> false
                        | :? Type -> true
                        | _ -> true)
                if not skip then
                    let ok =
                        match m with
                        | :? MethodInfo -> documented "M:" (tn + "." + m.Name)
                        // a constructor may be documented on its own or by its type's summary (records, primary constructors)
                        | :? ConstructorInfo -> documented "M:" (tn + ".#ctor") || documented "T:" tn
                        | :? PropertyInfo -> documented "P:" (tn + "." + m.Name) || paramOf t m.Name
                        // F# documents a [<Literal>] (a const field) as P:
                        | :? FieldInfo -> documented "F:" (tn + "." + m.Name) || documented "P:" (tn + "." + m.Name)
                        | :? EventInfo -> documented "E:" (tn + "." + m.Name)
                        | _ -> true
                    if not ok then yield $"{m.MemberType.ToString().ToLowerInvariant()} {tn}.{m.Name}" ]
    |> List.distinct
    |> List.map (fun s -> $"{Path.GetFileName dll}: no XML doc: {s}")

let missing = fsi.CommandLineArgs |> Array.skip 1 |> Array.toList |> List.collect check
missing |> List.iter (printfn "%s")
if missing.IsEmpty then printfn "doccheck: every public member of %d assemblies is documented" (fsi.CommandLineArgs.Length - 1)
else (eprintfn "doccheck: %d public members without XML docs" missing.Length; exit 1)
