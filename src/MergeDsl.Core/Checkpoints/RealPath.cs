namespace MergeDsl.Core.Checkpoints;

/// <summary>
/// Canonical spellings of paths, so that two spellings of one place compare equal: absolute, <c>.</c> and <c>..</c>
/// removed, no trailing separator, and every symbolic link among the components that exist resolved.
/// </summary>
public static class RealPath
{
    /// <summary>More links than this on one path is a loop.</summary>
    const int MaxLinks = 40;

    /// <summary>The canonical form of <paramref name="path"/>; components that do not exist are kept as written.</summary>
    public static string Resolve(string path)
    {
        int links = 0;
        return Resolve(path, ref links);
    }

    static string Resolve(string path, ref int links)
    {
        string full = Path.TrimEndingDirectorySeparator(Path.GetFullPath(path));
        string root = Path.GetPathRoot(full)!;
        string current = root;
        var parts = full[root.Length..].Split(Path.DirectorySeparatorChar, StringSplitOptions.RemoveEmptyEntries);
        for (int i = 0; i < parts.Length; i++)
        {
            string next = Path.Combine(current, parts[i]);
            FileSystemInfo info = new FileInfo(next);
            if (info.LinkTarget is null)
            {
                current = next;
                continue;
            }
            if (++links > MaxLinks) throw new IOException($"{path}: too many levels of symbolic links");
            string target = Path.IsPathRooted(info.LinkTarget) ? info.LinkTarget : Path.Combine(current, info.LinkTarget);
            current = Resolve(target, ref links);
        }
        return Path.TrimEndingDirectorySeparator(current);
    }

    /// <summary>True when <paramref name="inner"/> equals <paramref name="outer"/> or lies inside it (both canonical).</summary>
    public static bool IsSameOrInside(string inner, string outer) =>
        string.Equals(inner, outer, StringComparison.Ordinal)
        || inner.StartsWith(Path.EndsInDirectorySeparator(outer) ? outer : outer + Path.DirectorySeparatorChar, StringComparison.Ordinal);
}
