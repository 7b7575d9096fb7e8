namespace MergeDsl.Core.Checkpoints;

/// <summary>
/// Which symbolic links a model loader follows. By default: links that stay inside the model folder, and
/// links from a Hugging Face cache snapshot (<c>&lt;repo&gt;/snapshots/&lt;rev&gt;/...</c>) into the same
/// repository's <c>blobs/</c>. Everything else is refused unless <see cref="AllowLinksOutside"/>.
/// </summary>
public sealed record InputFilePolicy
{
    /// <summary>The environment variable that turns <see cref="AllowLinksOutside"/> on for every command ("1" or "true").</summary>
    public const string AllowLinksOutsideVariable = "MERGEDSL_ALLOW_SYMLINKS_OUTSIDE";

    /// <summary>Follow links whose target lies anywhere (still only regular files are opened).</summary>
    public bool AllowLinksOutside { get; init; }

    /// <summary>The strict default.</summary>
    public static InputFilePolicy Strict { get; } = new();

    /// <summary>
    /// The strict default, or <see cref="AllowLinksOutside"/> when <see cref="AllowLinksOutsideVariable"/>
    /// is set: an explicit opt-in that reaches every command and script without threading a flag
    /// through each loader.
    /// </summary>
    public static InputFilePolicy FromEnvironment() =>
        Environment.GetEnvironmentVariable(AllowLinksOutsideVariable)?.Trim().ToLowerInvariant() is "1" or "true" or "yes"
            ? new InputFilePolicy { AllowLinksOutside = true }
            : Strict;
}
