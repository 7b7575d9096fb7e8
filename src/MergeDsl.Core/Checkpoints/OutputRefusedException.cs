namespace MergeDsl.Core.Checkpoints;

/// <summary>
/// An output path that may not be written: it exists (without overwrite), is or overlaps an input, or is a folder
/// mergedsl did not write. Raised before any work; an <see cref="ArgumentException"/>, so the CLI exits with 2.
/// </summary>
public sealed class OutputRefusedException(string message) : ArgumentException(message);
