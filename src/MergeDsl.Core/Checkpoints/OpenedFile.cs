using Microsoft.Win32.SafeHandles;

namespace MergeDsl.Core.Checkpoints;

/// <summary>A model file opened by <see cref="ModelFiles.OpenRead"/>: a regular file, and what fstat said at open.</summary>
/// <param name="Path">The path as named (for messages).</param>
/// <param name="Handle">Read-only handle; the owner disposes it.</param>
/// <param name="Identity">Type, size, mtime and inode at open.</param>
public sealed record OpenedFile(string Path, SafeFileHandle Handle, FileIdentity Identity) : IDisposable
{
    /// <inheritdoc/>
    public void Dispose() => Handle.Dispose();
}
