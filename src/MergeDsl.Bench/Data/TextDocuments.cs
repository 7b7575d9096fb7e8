using System.Diagnostics;
using System.IO.Compression;
using System.Text;

namespace MergeDsl.Bench.Data;

/// <summary>One document of a text domain: a stable key (what the split hashes) and its text, read on demand.</summary>
/// <param name="Key">Stable identity (path, path#entry, book and chapter).</param>
/// <param name="Read">Reads the text; null when the file is unusable (not UTF-8, gone).</param>
public sealed record TextDocument(string Key, Func<string?> Read);

/// <summary>
/// Finds a domain's documents in what its Debian packages installed. Files come from dpkg's file lists, are
/// read only when they are regular files (no symlinks, so one file never counts twice), and must be valid
/// UTF-8 (Latin-2 twins of the Polish fortunes are skipped; their UTF-8 copies are read).
/// </summary>
public static class TextDocuments
{
    /// <summary>Where dpkg keeps each package's list of installed files.</summary>
    public const string DpkgInfo = "/var/lib/dpkg/info";

    static readonly UTF8Encoding StrictUtf8 = new(false, true);

    /// <summary>The packages of <paramref name="domain"/> that dpkg does not list as installed.</summary>
    public static IReadOnlyList<string> MissingPackages(TextDomain domain) =>
        domain.InstallPackages.Where(p => ListFile(p) is null).ToList();

    static string? ListFile(string package)
    {
        var plain = Path.Combine(DpkgInfo, package + ".list");
        if (File.Exists(plain)) return plain;
        // Multi-arch packages list their files as <package>:<arch>.list.
        return Directory.Exists(DpkgInfo) ? Directory.EnumerateFiles(DpkgInfo, package + ":*.list").Order(StringComparer.Ordinal).FirstOrDefault() : null;
    }

    /// <summary>Regular files the packages installed, sorted, filtered by <paramref name="keep"/>.</summary>
    static IEnumerable<string> PackageFiles(TextDomain domain, Func<string, bool> keep) =>
        domain.Packages.Select(ListFile).OfType<string>()
            .SelectMany(File.ReadLines)
            .Where(keep)
            .Where(IsRegularFile)
            .Distinct(StringComparer.Ordinal)
            .Order(StringComparer.Ordinal);

    static bool IsRegularFile(string path)
    {
        var info = new FileInfo(path);
        return info.Exists && info.LinkTarget is null;
    }

    /// <summary>The file's text, or null when it is not valid UTF-8.</summary>
    static string? ReadUtf8(string path, bool gzip = false)
    {
        try
        {
            if (!IsRegularFile(path)) return null;
            using var file = File.OpenRead(path);
            using Stream s = gzip ? new GZipStream(file, CompressionMode.Decompress) : file;
            using var ms = new MemoryStream();
            s.CopyTo(ms);
            return StrictUtf8.GetString(ms.ToArray());
        }
        catch (DecoderFallbackException) { return null; }
        catch (InvalidDataException) { return null; }
        catch (IOException) { return null; }
    }

    /// <summary>Every document of <paramref name="domain"/>, in a fixed order (texts read lazily where possible).</summary>
    /// <exception cref="DataNotInstalledException">A package is not installed (the message names the install command).</exception>
    public static IReadOnlyList<TextDocument> Enumerate(TextDomain domain)
    {
        var missing = MissingPackages(domain);
        if (missing.Count > 0)
            throw new DataNotInstalledException(
                $"text domain '{domain.Name}' needs Debian package(s) {string.Join(", ", missing)}; install them with: {TextCorpus.InstallCommand}");
        return domain.Kind switch
        {
            TextSourceKind.Fortunes => Fortunes(domain),
            TextSourceKind.BibleKjv => BibleChapters(),
            TextSourceKind.CHeaders => PackageFiles(domain, p => p.StartsWith("/usr/include/", StringComparison.Ordinal) && p.EndsWith(".h", StringComparison.Ordinal))
                .Select(p => new TextDocument(p, () => ReadUtf8(p))).ToList(),
            TextSourceKind.ManPages => PackageFiles(domain, p => p.StartsWith("/usr/share/man/", StringComparison.Ordinal) && p.EndsWith(".gz", StringComparison.Ordinal))
                // Pages of one line (".so man3/other.3") are links to another page, not text.
                .Select(p => new TextDocument(p, () => ReadUtf8(p, gzip: true) is { } t && t.Count(c => c == '\n') > 1 ? t : null)).ToList(),
            _ => throw new ArgumentOutOfRangeException(nameof(domain)),
        };
    }

    /// <summary>Fortune entries: the text between lines that hold only <c>%</c>, trimmed, empty ones dropped.</summary>
    public static IEnumerable<string> SplitFortunes(string text)
    {
        var entry = new StringBuilder();
        foreach (var line in text.Replace("\r\n", "\n").Split('\n'))
        {
            if (line == "%")
            {
                if (entry.ToString().Trim() is { Length: > 0 } e) yield return e;
                entry.Clear();
            }
            else entry.Append(line).Append('\n');
        }
        if (entry.ToString().Trim() is { Length: > 0 } last) yield return last;
    }

    static List<TextDocument> Fortunes(TextDomain domain)
    {
        var files = PackageFiles(domain, p =>
            p.StartsWith("/usr/share/games/fortunes/", StringComparison.Ordinal) && !p.EndsWith(".dat", StringComparison.Ordinal)
            && !p.Contains("/off/", StringComparison.Ordinal));
        var seen = new HashSet<string>(StringComparer.Ordinal);
        var docs = new List<TextDocument>();
        foreach (var f in files)
        {
            if (ReadUtf8(f) is not { } text) continue;
            int i = 0;
            foreach (var entry in SplitFortunes(text))
            {
                // A file and its .u8 twin hold the same entries: keep each entry once.
                if (seen.Add(entry)) docs.Add(new TextDocument($"{f}#{i}", () => entry));
                i++;
            }
        }
        return docs;
    }

    /// <summary>The whole KJV as the <c>bible</c> program prints it, cut at chapter headings ("Genesis 1").</summary>
    static List<TextDocument> BibleChapters()
    {
        var psi = new ProcessStartInfo("bible", ["Gen1:1-Rev22:21"])
        {
            RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false,
            StandardOutputEncoding = Encoding.UTF8, WorkingDirectory = Path.GetTempPath(),
        };
        psi.Environment["COLUMNS"] = "80";
        string text;
        try
        {
            using var p = Process.Start(psi) ?? throw new DataNotInstalledException($"could not start `bible`; install it with: {TextCorpus.InstallCommand}");
            var stderr = p.StandardError.ReadToEndAsync();
            text = p.StandardOutput.ReadToEnd();
            p.WaitForExit();
            if (p.ExitCode != 0 || text.Length == 0)
                throw new DataNotInstalledException($"`bible Gen1:1-Rev22:21` failed (exit {p.ExitCode}: {stderr.Result.Trim()}); install it with: {TextCorpus.InstallCommand}");
        }
        catch (System.ComponentModel.Win32Exception)
        {
            throw new DataNotInstalledException($"the `bible` program (Debian bible-kjv) is missing; install it with: {TextCorpus.InstallCommand}");
        }
        var lines = text.Replace("\r\n", "\n").Split('\n');
        var docs = new List<TextDocument>();
        string? heading = null;
        var body = new StringBuilder();
        void Flush()
        {
            if (heading is not null && body.ToString().Trim() is { Length: > 0 } chapter)
            {
                var doc = heading + "\n\n" + chapter;
                docs.Add(new TextDocument(heading, () => doc));
            }
            body.Clear();
        }
        for (int i = 0; i < lines.Length; i++)
        {
            // A heading stands alone between blank lines and does not start with a verse number's indent;
            // verse continuation lines are never surrounded by blank lines.
            bool isHeading = lines[i].Length > 0 && !char.IsWhiteSpace(lines[i][0])
                && (i == 0 || lines[i - 1].Length == 0) && i + 1 < lines.Length && lines[i + 1].Length == 0;
            if (isHeading)
            {
                Flush();
                heading = lines[i].Trim();
            }
            else body.Append(lines[i]).Append('\n');
        }
        Flush();
        return docs;
    }
}
