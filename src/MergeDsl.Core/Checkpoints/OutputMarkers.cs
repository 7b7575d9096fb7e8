namespace MergeDsl.Core.Checkpoints;

/// <summary>Names of the files that mark a folder written by a mergedsl run.</summary>
public static class OutputMarkers
{
    /// <summary>
    /// Present in every temporary output folder (<c>&lt;out&gt;.tmp-&lt;id&gt;</c>) from its creation until just
    /// before the final rename; JSON with <c>pid</c>, <c>processStart</c>, <c>host</c>, <c>startedUtc</c>.
    /// Loaders refuse a folder holding it: it is a half-written output, not a model.
    /// </summary>
    public const string Unfinished = ".mergedsl-unfinished";
}
