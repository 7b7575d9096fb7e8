using System.Text;
using System.Text.RegularExpressions;

namespace MergeDsl.Core.Checkpoints;

/// <summary>
/// The local Hugging Face hub cache, read offline: <c>models--org--name/refs/&lt;revision&gt;</c> holds a commit
/// hash, <c>snapshots/&lt;hash&gt;/</c> the files (links into <c>blobs/</c>, which <see cref="ModelFiles"/> follows).
/// Nothing is downloaded: a repository or revision missing here is an error saying so.
/// </summary>
public sealed partial class HubCache(string root)
{
    /// <summary>The cache folder (holding <c>models--*</c> folders).</summary>
    public string Root { get; } = root;

    /// <summary>
    /// The cache <c>huggingface_hub</c> uses: <c>HF_HUB_CACHE</c>, else the older <c>HUGGINGFACE_HUB_CACHE</c>,
    /// else <c>HF_HOME/hub</c>, else <c>XDG_CACHE_HOME/huggingface/hub</c>, else <c>~/.cache/huggingface/hub</c>.
    /// </summary>
    public static HubCache FromEnvironment()
    {
        static string? Var(string name) => Environment.GetEnvironmentVariable(name) is { Length: > 0 } v ? v : null;
        string root = Var("HF_HUB_CACHE") ?? Var("HUGGINGFACE_HUB_CACHE")
            ?? (Var("HF_HOME") is { } home ? Path.Combine(home, "hub") : null)
            ?? (Var("XDG_CACHE_HOME") is { } xdg ? Path.Combine(xdg, "huggingface", "hub") : null)
            ?? Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache", "huggingface", "hub");
        return new HubCache(Path.GetFullPath(ExpandHome(root)));
    }

    static string ExpandHome(string p) =>
        p == "~" || p.StartsWith("~/", StringComparison.Ordinal)
            ? Environment.GetFolderPath(Environment.SpecialFolder.UserProfile) + p[1..]
            : p;

    /// <summary>
    /// True for text shaped like a repo id, <c>name</c> or <c>org/name</c> (letters, digits, <c>-_.</c>; no
    /// <c>--</c> or <c>..</c>, as huggingface_hub validates them), optionally with <c>@revision</c>.
    /// </summary>
    public static bool LooksLikeRepoId(string text)
    {
        var (id, _) = SplitRevision(text);
        return RepoIdPattern().IsMatch(id) && !id.Contains("--", StringComparison.Ordinal) && !id.Contains("..", StringComparison.Ordinal);
    }

    /// <summary>Splits <c>org/name@revision</c> at the last <c>@</c>; revision null when absent.</summary>
    public static (string Id, string? Revision) SplitRevision(string text)
    {
        int at = text.LastIndexOf('@');
        return at < 0 ? (text, null) : (text[..at], text[(at + 1)..]);
    }

    /// <summary>The repository folder of a model repo id (<c>models--org--name</c>), existing or not.</summary>
    public string RepoFolder(string repoId) => Path.Combine(Root, "models--" + repoId.Replace("/", "--", StringComparison.Ordinal));

    /// <summary>
    /// The snapshot folder of <paramref name="repoId"/> at <paramref name="revision"/> (null: <c>main</c>): a branch
    /// or tag named in <c>refs/</c>, or a full commit hash with a snapshot.
    /// </summary>
    /// <exception cref="ModelReferenceException">The repository, revision or snapshot is not in the cache.</exception>
    public string Resolve(string repoId, string? revision = null)
    {
        string shown = revision is null ? repoId : $"{repoId}@{revision}";
        string repo = RepoFolder(repoId);
        if (!Directory.Exists(repo))
            throw new ModelReferenceException($"{shown}: not in the Hugging Face cache at {Root} (no network access; download it first)");
        string rev = revision ?? "main";
        if (rev.Length == 0 || rev.Contains("..", StringComparison.Ordinal) || rev.StartsWith('/') || rev.Contains('\0'))
            throw new ModelReferenceException($"{shown}: '{rev}' is not a revision");
        string snapshots = Path.Combine(repo, "snapshots");
        string? commit = null;
        // Pull-request refs are named as stored: `refs/pr/1` lives at refs/pr/1.
        string refFile = Path.Combine(repo, rev.StartsWith("refs/", StringComparison.Ordinal) ? rev : Path.Combine("refs", rev));
        if (File.Exists(refFile))
        {
            // A ref file is one line, a 40-hex commit hash; read like any file of a hostile folder.
            string text = Encoding.UTF8.GetString(ModelFiles.ReadAll(refFile, 4096, repo)).Trim();
            if (!CommitPattern().IsMatch(text))
                throw new ModelReferenceException($"{refFile}: not a commit hash ('{Text.TerminalText.Sanitize(text)}')");
            commit = text;
        }
        else if (CommitPattern().IsMatch(rev))
            commit = rev;
        if (commit is null)
            throw new ModelReferenceException(
                $"{shown}: revision '{rev}' is not in the Hugging Face cache at {repo} (refs: {List(Path.Combine(repo, "refs"), files: true)}; no network access; download it first)");
        string snapshot = Path.Combine(snapshots, commit);
        if (!Directory.Exists(snapshot))
            throw new ModelReferenceException(
                $"{shown}: snapshot {commit} is not in the Hugging Face cache at {repo} (snapshots: {List(snapshots, files: false)}; no network access; download it first)");
        return snapshot;
    }

    static string List(string folder, bool files)
    {
        if (!Directory.Exists(folder)) return "none";
        var names = (files ? Directory.GetFiles(folder, "*", SearchOption.AllDirectories) : Directory.GetDirectories(folder))
            .Select(p => Path.GetRelativePath(folder, p)).Order(StringComparer.Ordinal).Take(10).ToList();
        return names.Count == 0 ? "none" : Text.TerminalText.Sanitize(string.Join(", ", names));
    }

    [GeneratedRegex(@"^([A-Za-z0-9][A-Za-z0-9._-]*/)?[A-Za-z0-9][A-Za-z0-9._-]*$")]
    private static partial Regex RepoIdPattern();

    [GeneratedRegex("^[0-9a-f]{40}$")]
    private static partial Regex CommitPattern();
}
