// After `fsdocs build`: make the guide's links work on the site as they do on GitHub. fsdocs keeps a link to
// `cli.md#output-folders` as it is and names headings its own way (`Output-folders`, `header-1`), so:
// - a relative link to an .md page that fsdocs turned into an .html page is pointed at the .html page;
// - every heading also gets GitHub's id for it (lower case, punctuation dropped, spaces to '-', repeats
//   numbered), so fragments written for GitHub land on the same heading.
// - fsdocs 22.2.0 cannot read C# delegate types ("not a delegate type") and writes no page for them, yet
//   links to them: such a page is written here from the type's XML doc (summary and remarks).
//   dotnet fsi scripts/checks/site-links.fsx SITE A.xml [B.xml ...]
open System
open System.IO
open System.Net
open System.Text.RegularExpressions

let site = Path.GetFullPath(fsi.CommandLineArgs.[1])
let xmlDocs = fsi.CommandLineArgs |> Array.skip 2

// Pages of types fsdocs linked to but did not write: reference/<full-name-lower-with-dashes>.html.
let missingTypePages =
    [ for file in Directory.GetFiles(site, "*.html", SearchOption.AllDirectories) do
        for m in Regex.Matches(File.ReadAllText file, "href=\"/reference/([a-z0-9-]+)\\.html") do
            let page = Path.Combine(site, "reference", m.Groups.[1].Value + ".html")
            if not (File.Exists page) then yield m.Groups.[1].Value ]
    |> Set.ofList
for xml in xmlDocs do
    for mem in Xml.Linq.XDocument.Load(xml).Descendants(Xml.Linq.XName.Get "member") do
        let name = mem.Attribute(Xml.Linq.XName.Get "name").Value
        if name.StartsWith "T:" then
            let full = name.Substring 2
            let page = full.ToLowerInvariant().Replace('.', '-').Replace('`', '-')
            if missingTypePages.Contains page then
                let text (tag: string) =
                    mem.Elements(Xml.Linq.XName.Get tag)
                    |> Seq.map (fun e -> WebUtility.HtmlEncode(Regex.Replace(e.Value, "\\s+", " ").Trim()))
                    |> String.concat " "
                let title = WebUtility.HtmlEncode full
                let summary, remarks = text "summary", text "remarks"
                let body =
                    $"""<!DOCTYPE html><html lang="en"><head><meta charset="UTF-8"><title>{title}</title>"""
                    + """<link href="/content/fsdocs-default.css" rel="stylesheet" type="text/css"/></head><body><main>"""
                    + $"""<h1>{title} (delegate)</h1><p>{summary}</p><p>{remarks}</p>"""
                    + """<p><a href="/reference/index.html">API reference</a></p></main></body></html>"""
                File.WriteAllText(Path.Combine(site, "reference", page + ".html"), body)
                printfn "site-links: wrote the page fsdocs could not for %s" full


let slug (text: string) =
    Regex.Replace(text.ToLowerInvariant(), "[^\\p{L}\\p{N}\\s_-]", "").Replace(' ', '-')

let mutable pages = 0
for file in Directory.GetFiles(site, "*.html", SearchOption.AllDirectories) do
    let html = File.ReadAllText file
    let dir = Path.GetDirectoryName file
    let relinked =
        Regex.Replace(html, "href=\"(?![a-zA-Z][a-zA-Z0-9+.-]*:|/|#)([^\"#?]+)\\.md(#[^\"]*)?\"", fun m ->
            let page = m.Groups.[1].Value + ".html"
            if File.Exists(Path.Combine(dir, WebUtility.HtmlDecode page)) then $"href=\"{page}{m.Groups.[2].Value}\"" else m.Value)
    let seen = Collections.Generic.Dictionary<string, int>()
    let withIds =
        Regex.Replace(relinked, "<h([1-6])>(.*?)</h\\1>", (fun (m: Match) ->
            let text = WebUtility.HtmlDecode(Regex.Replace(m.Groups.[2].Value, "<[^>]+>", "")).Trim()
            let s = slug text
            let n = match seen.TryGetValue s with | true, k -> k | _ -> 0
            seen.[s] <- n + 1
            let id = if n = 0 then s else $"{s}-{n}"
            $"<h{m.Groups.[1].Value} id=\"{id}\">{m.Groups.[2].Value}</h{m.Groups.[1].Value}>"), RegexOptions.Singleline)
    if withIds <> html then
        File.WriteAllText(file, withIds)
        pages <- pages + 1
printfn "site-links: %d pages given GitHub's links and heading ids" pages
