namespace MergeDsl.Core.Checkpoints;

/// <summary>What a path is, from stat(2)'s file type bits.</summary>
public enum FileKind
{
    /// <summary>A regular file: the only kind a model file may be.</summary>
    Regular,
    /// <summary>A folder.</summary>
    Directory,
    /// <summary>A symbolic link (only seen when links are not followed).</summary>
    SymbolicLink,
    /// <summary>A named pipe: opening it for reading blocks until a writer appears.</summary>
    Fifo,
    /// <summary>A character device such as /dev/zero (endless) or a terminal.</summary>
    CharacterDevice,
    /// <summary>A block device.</summary>
    BlockDevice,
    /// <summary>A Unix socket.</summary>
    Socket,
    /// <summary>Anything else.</summary>
    Other,
}
