namespace MergeDsl.Core.Checkpoints;

/// <summary>Names of the marker files mergedsl keeps in the folders it writes.</summary>
public static class OutputMarkers
{
    /// <summary>
    /// In every temporary output folder (<c>&lt;out&gt;.tmp-&lt;id&gt;</c>) from its creation until just before the
    /// final rename; JSON naming the owning process (<see cref="UnfinishedMarker"/>). Loaders refuse a folder holding it,
    /// and the next run to the same output removes it once its owner is gone.
    /// </summary>
    public const string Unfinished = ".mergedsl-unfinished";

    /// <summary>
    /// In every finished output folder: what lets <c>--force</c> replace a folder, since only a folder that is empty or
    /// carries this file (or, from before it existed, a checkpoint whose metadata has a <c>mergedsl</c> key) was
    /// written by mergedsl.
    /// </summary>
    public const string Finished = ".mergedsl-output";
}
