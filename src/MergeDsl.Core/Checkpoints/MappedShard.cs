using System.Buffers.Binary;
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
    readonly MemoryMappedFile _file;
    readonly MemoryMappedViewAccessor _view;
    readonly byte* _base;
    int _refs = 1;
    int _ownerReleased;

    public string File { get; }
    public long Length { get; }
    public SafetensorsHeader Header { get; }
    public long DataStart { get; }

    MappedShard(string file, long length, MemoryMappedFile mmf, MemoryMappedViewAccessor view, byte* basePtr)
    {
        File = file;
        Length = length;
        _file = mmf;
        _view = view;
        _base = basePtr;
        try
        {
            ulong declared = BinaryPrimitives.ReadUInt64LittleEndian(new ReadOnlySpan<byte>(_base, 8));
            long headerLength = SafetensorsHeader.CheckPrefix(file, length, declared);
            DataStart = 8 + headerLength;
            Header = SafetensorsHeader.Parse(file, new ReadOnlySpan<byte>(_base + 8, (int)headerLength), DataStart, length - DataStart);
        }
        catch
        {
            Unmap();
            throw;
        }
    }

    /// <summary>Maps and validates <paramref name="file"/>.</summary>
    public static MappedShard Open(string file)
    {
        var info = new FileInfo(file);
        if (!info.Exists) throw new FileNotFoundException($"{file}: no such file", file);
        if (info.Length < 8)
            throw new CheckpointFormatException(file, $"file is {info.Length} bytes, shorter than the 8-byte header length");
        var mmf = MemoryMappedFile.CreateFromFile(file, FileMode.Open, null, 0, MemoryMappedFileAccess.CopyOnWrite);
        MemoryMappedViewAccessor? view = null;
        try
        {
            view = mmf.CreateViewAccessor(0, info.Length, MemoryMappedFileAccess.CopyOnWrite);
            byte* p = null;
            view.SafeMemoryMappedViewHandle.AcquirePointer(ref p);
            return new MappedShard(file, info.Length, mmf, view, p + view.PointerOffset);
        }
        catch
        {
            view?.Dispose();
            mmf.Dispose();
            throw;
        }
    }

    /// <summary>Address of an absolute file offset; valid while a reference is held.</summary>
    public byte* At(long offset) => _base + offset;

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
    }
}
