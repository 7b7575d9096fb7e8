// After `fsdocs build`: make the guide's links work on the site as they do on GitHub. fsdocs keeps a link to
// `cli.md#output-folders` as it is and names headings its own way (`Output-folders`, `header-1`), so:
// - a relative link to an .md page that fsdocs turned into an .html page is pointed at the .html page;
// - every heading also gets GitHub's id for it (lower case, punctuation dropped, spaces to '-', repeats
//   numbered), so fragments written for GitHub land on the same heading.
//   dotnet fsi scripts/checks/site-links.fsx SITE
open System
open System.IO
open System.Net
open System.Text.RegularExpressions

let site = Path.GetFullPath(fsi.CommandLineArgs.[1])

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
