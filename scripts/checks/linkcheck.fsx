// Broken-link check for the documentation, in both places it is read:
// - the Markdown as GitHub shows it (README.md, docs/**/*.md): every relative link and image must name an
//   existing file, and a #fragment a heading of the target page (GitHub's heading ids);
// - the site fsdocs built (every .html under SITE): every relative href/src must name an existing file of the
//   site (pages, API reference members, images), and a #fragment an id or name in the target page.
// External links (http, https, mailto) are not followed: no network here. Exit status 1 and one line per
// broken link when any is broken.
//   dotnet fsi scripts/checks/linkcheck.fsx REPO SITE
open System
open System.IO
open System.Text.RegularExpressions

let repo, site =
    match fsi.CommandLineArgs |> Array.skip 1 with
    | [| r; s |] -> Path.GetFullPath r, Path.GetFullPath s
    | a -> failwithf "usage: dotnet fsi linkcheck.fsx REPO SITE (got %A)" a

let external (t: string) =
    Regex.IsMatch(t, "^[a-zA-Z][a-zA-Z0-9+.-]*:") || t.StartsWith "//"

let split (t: string) =
    let t = t.Trim()
    match t.IndexOf '#' with
    | -1 -> t, None
    | i -> t.Substring(0, i), Some(Uri.UnescapeDataString(t.Substring(i + 1)))

// ---- Markdown, as GitHub renders it
let withoutFences (text: string) = Regex.Replace(text, "(?ms)^\\s*```.*?^\\s*```[^\\n]*$", "")
let withoutCode (text: string) = Regex.Replace(withoutFences text, "`[^`\\n]*`", "")

// GitHub's heading ids: lower case, punctuation other than '-' and '_' dropped, spaces to '-', repeats numbered.
let slugs (markdown: string) =
    let seen = Collections.Generic.Dictionary<string, int>()
    [ for m in Regex.Matches(withoutFences markdown, "(?m)^#{1,6}\\s+(.+?)\\s*#*\\s*$") do
        let text = Regex.Replace(m.Groups.[1].Value, "\\[([^\\]]*)\\]\\([^)]*\\)", "$1")
        let s = Regex.Replace(text.ToLowerInvariant(), "[^\\p{L}\\p{N}\\s_-]", "").Replace(' ', '-')
        let n = match seen.TryGetValue s with | true, k -> k | _ -> 0
        seen.[s] <- n + 1
        yield (if n = 0 then s else $"{s}-{n}") ]
    |> Set.ofList

let markdownFiles =
    [ yield Path.Combine(repo, "README.md")
      yield! Directory.GetFiles(Path.Combine(repo, "docs"), "*.md", SearchOption.AllDirectories) ]

let markdownProblems =
    [ for file in markdownFiles do
        let text = File.ReadAllText file
        let targets =
            [ for m in Regex.Matches(withoutCode text, "\\]\\(\\s*<?([^)\\s>]+)>?(?:\\s+\"[^\"]*\")?\\)") -> m.Groups.[1].Value
              for m in Regex.Matches(withoutCode text, "<img[^>]*\\ssrc=\"([^\"]+)\"") -> m.Groups.[1].Value ]
        for t in targets do
            if not (external t) then
                let path, frag = split t
                let target = if path = "" then file else Path.GetFullPath(Path.Combine(Path.GetDirectoryName file, Uri.UnescapeDataString path))
                let rel = Path.GetRelativePath(repo, file)
                if not (File.Exists target || Directory.Exists target) then yield $"{rel}: link to missing file {t}"
                else
                    match frag with
                    | Some f when target.EndsWith ".md" && not (Set.contains f (slugs (File.ReadAllText target))) ->
                        yield $"{rel}: link {t}: no heading #{f} in {Path.GetRelativePath(repo, target)}"
                    | _ -> () ]

// ---- the built site
let anchorsOf =
    let cache = Collections.Generic.Dictionary<string, Set<string>>()
    fun (file: string) ->
        match cache.TryGetValue file with
        | true, s -> s
        | _ ->
            let html = File.ReadAllText file
            let s = Regex.Matches(html, "\\s(?:id|name)=\"([^\"]+)\"") |> Seq.map (fun m -> m.Groups.[1].Value) |> Set.ofSeq
            cache.[file] <- s
            s

let htmlFiles = if Directory.Exists site then Directory.GetFiles(site, "*.html", SearchOption.AllDirectories) else [||]
let siteProblems =
    [ if htmlFiles.Length = 0 then yield $"{site}: no HTML pages were built"
      for file in htmlFiles do
        let html = File.ReadAllText file
        for m in Regex.Matches(html, "\\s(?:href|src)=\"([^\"]*)\"") do
            let t = Net.WebUtility.HtmlDecode m.Groups.[1].Value
            if t <> "" && not (external t) && not (t.StartsWith "javascript:") then
                let path, frag = split t
                let path = path.Split('?').[0]
                let target =
                    if path = "" then file
                    elif path.StartsWith "/" then Path.Combine(site, Uri.UnescapeDataString(path.TrimStart '/'))
                    else Path.GetFullPath(Path.Combine(Path.GetDirectoryName file, Uri.UnescapeDataString path))
                let target = if Directory.Exists target then Path.Combine(target, "index.html") else target
                let rel = Path.GetRelativePath(site, file)
                // A page's link to a repository file that is not a page (a script in deploy/, a notebook, a report
                // folder) is kept as written: it resolves against the page's source folder under docs/, as on GitHub.
                let inRepo =
                    not (path = "" || path.StartsWith "/")
                    && (let source = Path.GetFullPath(Path.Combine(repo, "docs", Path.GetDirectoryName rel, Uri.UnescapeDataString path))
                        File.Exists source || Directory.Exists source)
                if not (File.Exists target) && not inRepo then yield $"site {rel}: link to missing {t}"
                else
                    match frag with
                    | Some f when f <> "" && target.EndsWith ".html" && not (Set.contains f (anchorsOf target)) ->
                        yield $"site {rel}: link {t}: no id/name \"{f}\" in {Path.GetRelativePath(site, target)}"
                    | _ -> () ]

let problems = (markdownProblems @ siteProblems) |> List.distinct
problems |> List.iter (printfn "%s")
if problems.IsEmpty then
    printfn "linkcheck: %d Markdown files and %d HTML pages, no broken link" markdownFiles.Length htmlFiles.Length
else
    eprintfn "linkcheck: %d broken links" problems.Length
    exit 1
