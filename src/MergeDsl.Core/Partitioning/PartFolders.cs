namespace MergeDsl.Core.Partitioning;

/// <summary>
/// Where the pieces of a partitioned merge into <c>OUT</c> live: <c>OUT.parts/</c> beside it (on the file system every
/// worker shares) holds <c>stats.json</c> (the statistics step's result, when the plan needs one) and one folder
/// <c>part-I-of-N</c> per finished part (its shards and <see cref="PartManifest.FileName"/>). Finalize turns them into
/// <c>OUT</c> and removes <c>OUT.parts/</c>.
/// </summary>
public static class PartFolders
{
    /// <summary>The folder holding the parts of the merge into <paramref name="target"/>.</summary>
    public static string PartsFolder(string target) => Path.TrimEndingDirectorySeparator(target) + ".parts";

    /// <summary>The folder of part <paramref name="part"/> (0-based) of <paramref name="parts"/>.</summary>
    public static string PartFolder(string target, int part, int parts) => Path.Combine(PartsFolder(target), PartName(part, parts));

    /// <summary>The name of a part's folder.</summary>
    public static string PartName(int part, int parts) => $"part-{part}-of-{parts}";

    /// <summary>The statistics file every part reads.</summary>
    public static string StatisticsFile(string target) => Path.Combine(PartsFolder(target), "stats.json");
}
