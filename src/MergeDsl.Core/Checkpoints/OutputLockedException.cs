namespace MergeDsl.Core.Checkpoints;

/// <summary>Another run holds the lock on the same output folder.</summary>
public sealed class OutputLockedException(string target, string lockFile)
    : IOException($"{target}: another mergedsl run is writing this output (lock {lockFile} is held); wait for it or choose another output")
{
    /// <summary>The output folder.</summary>
    public string Target { get; } = target;
}
