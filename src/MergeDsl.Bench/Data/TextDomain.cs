namespace MergeDsl.Bench.Data;

/// <summary>How a text domain's documents are read from what its Debian packages installed.</summary>
public enum TextSourceKind
{
    /// <summary>Fortune files (entries separated by lines holding only <c>%</c>); one document per entry.</summary>
    Fortunes,
    /// <summary>The King James Bible as the <c>bible</c> program of Debian's <c>bible-kjv</c> prints it; one document per chapter.</summary>
    BibleKjv,
    /// <summary>C headers (<c>*.h</c>); one document per file.</summary>
    CHeaders,
    /// <summary>Gzipped man pages (roff source); one document per page.</summary>
    ManPages,
}

/// <summary>
/// One domain of the text task pool: the Debian packages its text comes from (their files are found through
/// dpkg's file lists, <c>/var/lib/dpkg/info/&lt;package&gt;.list</c>, so another package's files never leak in),
/// how to read them, and whether it is merged (held-in) or only evaluated (held-out).
/// </summary>
/// <param name="Name">Short name used in tables and file names.</param>
/// <param name="Description">What the text is.</param>
/// <param name="Packages">Debian packages whose installed files are read.</param>
/// <param name="Kind">How documents are cut from those files.</param>
/// <param name="HeldOut">True for domains no expert is trained on and no merge sees (held-out generalisation).</param>
public sealed record TextDomain(string Name, string Description, IReadOnlyList<string> Packages, TextSourceKind Kind, bool HeldOut)
{
    /// <summary>The packages to install for this domain (the <c>bible</c> program for the KJV text).</summary>
    public IEnumerable<string> InstallPackages => Kind == TextSourceKind.BibleKjv ? Packages.Append("bible-kjv").Distinct() : Packages;
}

/// <summary>The domains of the text task pool.</summary>
public static class TextDomains
{
    /// <summary>English fortunes (Debian <c>fortunes</c>, not the offensive ones).</summary>
    public static readonly TextDomain English = new("en", "English fortunes", ["fortunes", "fortunes-min"], TextSourceKind.Fortunes, false);
    /// <summary>German fortunes.</summary>
    public static readonly TextDomain German = new("de", "German fortunes", ["fortunes-de"], TextSourceKind.Fortunes, false);
    /// <summary>Italian fortunes.</summary>
    public static readonly TextDomain Italian = new("it", "Italian fortunes", ["fortunes-it"], TextSourceKind.Fortunes, false);
    /// <summary>Spanish fortunes.</summary>
    public static readonly TextDomain Spanish = new("es", "Spanish fortunes", ["fortunes-es"], TextSourceKind.Fortunes, false);
    /// <summary>The King James Bible.</summary>
    public static readonly TextDomain Bible = new("kjv", "King James Bible, one chapter per document", ["bible-kjv-text"], TextSourceKind.BibleKjv, false);
    /// <summary>C headers of glibc and the Linux UAPI (installed on every Debian machine with a C compiler).</summary>
    public static readonly TextDomain CHeaders = new("c", "C headers of libc6-dev and linux-libc-dev", ["libc6-dev", "linux-libc-dev"], TextSourceKind.CHeaders, false);
    /// <summary>Man pages of the C library and system calls (roff source).</summary>
    public static readonly TextDomain ManPages = new("man", "man pages of manpages-dev (roff source)", ["manpages-dev"], TextSourceKind.ManPages, false);
    /// <summary>Polish fortunes (held out).</summary>
    public static readonly TextDomain Polish = new("pl", "Polish fortunes (held out)", ["fortunes-pl"], TextSourceKind.Fortunes, true);
    /// <summary>Czech fortunes (held out).</summary>
    public static readonly TextDomain Czech = new("cs", "Czech fortunes (held out)", ["fortunes-cs"], TextSourceKind.Fortunes, true);

    /// <summary>Every domain, held-in first, in table order.</summary>
    public static readonly IReadOnlyList<TextDomain> All = [English, German, Italian, Spanish, Bible, CHeaders, ManPages, Polish, Czech];

    /// <summary>A domain by name.</summary>
    /// <exception cref="ArgumentException">No domain has that name (the message lists them).</exception>
    public static TextDomain ByName(string name) =>
        All.FirstOrDefault(d => d.Name == name)
        ?? throw new ArgumentException($"unknown text domain '{name}'; known: {string.Join(", ", All.Select(d => d.Name))}");
}
