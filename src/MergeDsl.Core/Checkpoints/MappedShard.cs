using System.IO.MemoryMappedFiles;

namespace MergeDsl.Core.Checkpoints;

/// <summary>
/// One safetensors file mapped into memory copy-on-write (an accidental in-place op on a zero-copy
/// tensor changes private pages, never the file, and cannot fault on a read-only page). Reference
/// counted: the owning checkpoint holds one reference and every zero-copy tensor one more, so the
/// mapping outlives the checkpoint until the last view is disposed.
/// </summary>
internal sealed unsafe class MappedShard
{
    readonly OpenedFile _opened;
    readonly MemoryMappedFile _file;
    readonly MemoryMappedViewAccessor _view;
    readonly byte* _base;
    int _refs = 1;
    int _ownerReleased;

    public string File { get; }
    public long Length { get; }
    public SafetensorsHeader Header { get; }
    public long DataStart { get; }

    MappedShard(OpenedFile opened, MemoryMappedFile mmf, MemoryMappedViewAccessor view, byte* basePtr)
    {
        _opened = opened;
        File = opened.Path;
        Length = opened.Identity.Size;
        _file = mmf;
        _view = view;
        _base = basePtr;
        try
        {
            Header = SafetensorsHeader.Validate(File, new ReadOnlySpan<byte>(_base, (int)Math.Min(Length, 8 + SafetensorsHeader.MaxHeaderBytes)), Length);
            DataStart = 8 + Header.HeaderLength;
        }
        catch
        {
            Unmap();
            throw;
        }
    }

    /// <summary>
    /// Opens <paramref name="file"/> through <see cref="ModelFiles.OpenRead"/> (regular files only, link
    /// rule of <paramref name="modelFolder"/>), maps and validates it.
    /// </summary>
    public static MappedShard Open(string file, string? modelFolder = null, InputFilePolicy? policy = null)
    {
        var opened = ModelFiles.OpenRead(file, modelFolder, policy);
        try
        {
            long length = opened.Identity.Size;
            if (length < 8)
                throw new CheckpointFormatException(file, $"file is {length} bytes, shorter than the 8-byte header length");
            try
            {
                return Map(opened, MemoryMappedFileAccess.CopyOnWrite);
            }
            catch (IOException)
            {
                // A writable private mapping is charged against overcommit; Linux refuses one larger than
                // RAM + swap. A read-only mapping is not charged (in-place ops on views would then fault,
                // which the ITensorSource contract already forbids).
                return Map(opened, MemoryMappedFileAccess.Read);
            }
        }
        catch
        {
            opened.Dispose();
            throw;
        }
    }

    static MappedShard Map(OpenedFile opened, MemoryMappedFileAccess access)
    {
        long length = opened.Identity.Size;
        var mmf = MemoryMappedFile.CreateFromFile(opened.Handle, null, length, access, HandleInheritability.None, leaveOpen: true);
        MemoryMappedViewAccessor? view = null;
        try
        {
            view = mmf.CreateViewAccessor(0, length, access);
            byte* p = null;
            view.SafeMemoryMappedViewHandle.AcquirePointer(ref p);
            return new MappedShard(opened, mmf, view, p + view.PointerOffset);
        }
        catch
        {
            view?.Dispose();
            mmf.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Throws when the file is no longer what was mapped (size, mtime or inode changed): reading a
    /// truncated mapping raises SIGBUS, which .NET cannot catch, and a rewritten one gives mixed data.
    /// </summary>
    public void EnsureUnchanged()
    {
        var now = UnixFiles.Stat(_opened.Handle, File);
        var then = _opened.Identity;
        if (now.Size != then.Size)
            throw new CheckpointFormatException(File, $"changed while being read: {then.Size} bytes at open, {now.Size} now; the run stops rather than read a file being rewritten");
        if (now.ModifiedNs != then.ModifiedNs || !now.SameFileAs(then))
            throw new CheckpointFormatException(File, "was modified while being read; the run stops rather than read a file being rewritten");
    }

    /// <summary>Address of an absolute file offset; valid while a reference is held.</summary>
    public byte* At(long offset) => _base + offset;

    /// <summary>The owner's reference plus one per live zero-copy storage; 0 once unmapped.</summary>
    public int References => Volatile.Read(ref _refs);

    public void AddRef()
    {
        if (Interlocked.Increment(ref _refs) <= 1)
            throw new ObjectDisposedException(File, "the checkpoint's mapping was already released");
    }

    public void Release()
    {
        if (Interlocked.Decrement(ref _refs) == 0) Unmap();
    }

    /// <summary>Drops the owner's reference (idempotent).</summary>
    public void ReleaseOwner()
    {
        if (Interlocked.Exchange(ref _ownerReleased, 1) == 0) Release();
    }

    void Unmap()
    {
        _view.SafeMemoryMappedViewHandle.ReleasePointer();
        _view.Dispose();
        _file.Dispose();
        _opened.Dispose();
    }
}
