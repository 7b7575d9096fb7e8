namespace MergeDsl.Core.Checkpoints;

/// <summary>
/// A checkpoint file is malformed. The message is always "&lt;file&gt;: &lt;problem&gt;" on one line, so
/// the CLI can print it as is.
/// </summary>
public sealed class CheckpointFormatException : Exception
{
    /// <summary>The file at fault.</summary>
    public string File { get; }

    /// <summary>The problem, without the file name.</summary>
    public string Problem { get; }

    /// <summary>Creates the exception for <paramref name="file"/>.</summary>
    public CheckpointFormatException(string file, string problem, Exception? inner = null)
        : base($"{file}: {problem}", inner)
    {
        File = file;
        Problem = problem;
    }
}
