namespace MergeDsl.Core.Checkpoints;

/// <summary>
/// What stat(2) says about one file: enough to tell whether it is the same file, unchanged, later on.
/// </summary>
/// <param name="Kind">File type.</param>
/// <param name="Size">Length in bytes.</param>
/// <param name="ModifiedNs">Modification time in nanoseconds since the Unix epoch.</param>
/// <param name="Device">Device number (major &lt;&lt; 32 | minor).</param>
/// <param name="Inode">Inode number.</param>
public readonly record struct FileIdentity(FileKind Kind, long Size, long ModifiedNs, long Device, long Inode)
{
    /// <summary>"a FIFO", "a character device", ... for messages.</summary>
    public string KindText => Kind switch
    {
        FileKind.Regular => "a regular file",
        FileKind.Directory => "a folder",
        FileKind.SymbolicLink => "a symbolic link",
        FileKind.Fifo => "a FIFO (named pipe)",
        FileKind.CharacterDevice => "a character device",
        FileKind.BlockDevice => "a block device",
        FileKind.Socket => "a socket",
        _ => "not a regular file",
    };

    /// <summary>True when both describe the same inode on the same device.</summary>
    public bool SameFileAs(FileIdentity other) => Device == other.Device && Inode == other.Inode;
}
