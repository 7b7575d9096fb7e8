using System.Buffers.Binary;
using System.IO.Compression;
using System.Numerics;

namespace MergeDsl.Core.Checkpoints.Torch;

/// <summary>
/// One PyTorch <c>torch.save</c> file read without running its pickle: the zip format (torch ≥ 1.6:
/// <c>&lt;name&gt;/data.pkl</c> + <c>&lt;name&gt;/data/&lt;key&gt;</c>) or the legacy format (a magic number, protocol
/// version and system-info pickle, the main pickle, the sorted storage keys, then each storage as an int64
/// element count and its bytes). Storage bytes are read on demand.
/// </summary>
internal sealed class TorchFile : IDisposable
{
    static readonly BigInteger LegacyMagic = BigInteger.Parse("119547037146038801333356");
    const long LegacyProtocol = 1001;
    const long MaxPickleBytes = 1L << 30;

    readonly OpenedFile _opened;
    readonly FileStream _stream;
    readonly ZipArchive? _zip;
    readonly string _prefix = "";
    readonly Dictionary<string, (long Offset, long Numel)> _legacyStorages = new(StringComparer.Ordinal);
    readonly Dictionary<string, DType> _storageTypes = new(StringComparer.Ordinal);
    readonly object _lock = new();

    TorchFile(string file, OpenedFile opened)
    {
        File = file;
        _opened = opened;
        _stream = new FileStream(new Microsoft.Win32.SafeHandles.SafeFileHandle(opened.Handle.DangerousGetHandle(), ownsHandle: false), FileAccess.Read, 1 << 16);
        try
        {
            var magic = new byte[4];
            int n = _stream.Read(magic);
            _stream.Position = 0;
            if (n == 4 && magic[0] == 'P' && magic[1] == 'K' && magic[2] == 3 && magic[3] == 4)
            {
                try { _zip = new ZipArchive(_stream, ZipArchiveMode.Read, leaveOpen: true); }
                catch (InvalidDataException e) { throw new CheckpointFormatException(file, $"not a valid zip archive ({e.Message})"); }
                Root = ReadZip(out _prefix);
            }
            else if (n >= 1 && magic[0] == 0x80)
                Root = ReadLegacy();
            else
                throw new CheckpointFormatException(file, "not a PyTorch checkpoint (neither a torch.save zip archive nor a legacy pickle)");
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    /// <summary>The file, as named.</summary>
    public string File { get; }

    /// <summary>The unpickled top-level value (a dict of tensors in a state dict).</summary>
    public object? Root { get; }

    /// <summary>Opens and unpickles <paramref name="file"/> under the hostile-folder rules of <paramref name="modelFolder"/>.</summary>
    public static TorchFile Open(string file, string modelFolder, InputFilePolicy policy)
    {
        var opened = ModelFiles.OpenRead(file, modelFolder, policy);
        try { return new TorchFile(file, opened); }
        catch
        {
            opened.Dispose();
            throw;
        }
    }

    object? ReadZip(out string prefix)
    {
        var pkl = _zip!.Entries.Where(e => e.FullName == "data.pkl" || e.FullName.EndsWith("/data.pkl", StringComparison.Ordinal)).ToList();
        if (pkl.Count != 1)
            throw new CheckpointFormatException(File, pkl.Count == 0 ? "zip archive without data.pkl: not a torch.save file" : "zip archive with several data.pkl files");
        prefix = pkl[0].FullName[..^"data.pkl".Length];
        if (_zip.GetEntry(prefix + "byteorder") is { } order)
        {
            using var r = new StreamReader(order.Open());
            string text = r.ReadToEnd().Trim();
            if (text != "little") throw new CheckpointFormatException(File, $"byte order '{Text.TerminalText.Sanitize(text)}' is not supported (only little-endian)");
        }
        if (pkl[0].Length > MaxPickleBytes) throw new CheckpointFormatException(File, $"data.pkl is {pkl[0].Length} bytes, over the {MaxPickleBytes}-byte limit");
        var bytes = new MemoryStream();
        using (var s = pkl[0].Open()) CopyBounded(s, bytes, MaxPickleBytes);
        bytes.Position = 0;
        var root = RestrictedUnpickler.Load(bytes, File, pid => Storage(pid, legacy: false));
        if (bytes.Position != bytes.Length) throw new CheckpointFormatException(File, "data.pkl has bytes after its STOP opcode");
        return root;
    }

    void CopyBounded(Stream from, Stream to, long max)
    {
        var buffer = new byte[1 << 16];
        long total = 0;
        int n;
        while ((n = from.Read(buffer)) > 0)
        {
            total += n;
            if (total > max) throw new CheckpointFormatException(File, $"data.pkl decompresses to over {max} bytes");
            to.Write(buffer, 0, n);
        }
    }

    object? ReadLegacy()
    {
        var magic = RestrictedUnpickler.Load(_stream, File, _ => throw new CheckpointFormatException(File, "persistent id in the header pickle"));
        if (!(magic is BigInteger m && m == LegacyMagic))
            throw new CheckpointFormatException(File, "a pickle, but not a torch.save file (no PyTorch magic number); only torch.save checkpoints are read");
        var protocol = RestrictedUnpickler.Load(_stream, File, _ => throw new CheckpointFormatException(File, "persistent id in the header pickle"));
        if (protocol is not LegacyProtocol)
            throw new CheckpointFormatException(File, $"legacy torch.save protocol {protocol} is not supported (expected {LegacyProtocol})");
        var sysInfo = RestrictedUnpickler.Load(_stream, File, _ => throw new CheckpointFormatException(File, "persistent id in the header pickle"));
        if (sysInfo is PickleDict info && info.Items.Any(kv => kv.Key is "little_endian" && kv.Value is false))
            throw new CheckpointFormatException(File, "written on a big-endian machine; only little-endian checkpoints are read");
        var root = RestrictedUnpickler.Load(_stream, File, pid => Storage(pid, legacy: true));
        var keys = RestrictedUnpickler.Load(_stream, File, _ => throw new CheckpointFormatException(File, "persistent id in the storage key list"));
        if (keys is not List<object?> list || list.Any(k => k is not string))
            throw new CheckpointFormatException(File, "the storage key list is not a list of strings");
        long position = _stream.Position;
        Span<byte> count = stackalloc byte[8];
        foreach (string key in list.Cast<string>())
        {
            if (!_storageTypes.TryGetValue(key, out var dtype))
                throw new CheckpointFormatException(File, $"storage '{Text.TerminalText.Sanitize(key)}' is listed but no tensor uses it");
            if (RandomAccess.Read(_opened.Handle, count, position) != 8)
                throw new CheckpointFormatException(File, $"storage '{key}': the file ends before its element count");
            long numel = BinaryPrimitives.ReadInt64LittleEndian(count);
            long bytes = numel < 0 || numel > long.MaxValue / 8 ? -1 : numel * DTypes.SizeOf(dtype);
            if (bytes < 0 || position + 8 + bytes > _opened.Identity.Size)
                throw new CheckpointFormatException(File, $"storage '{key}' of {numel} elements runs past the end of the file");
            _legacyStorages[key] = (position + 8, numel);
            position += 8 + bytes;
        }
        foreach (var key in _storageTypes.Keys)
            if (!_legacyStorages.ContainsKey(key))
                throw new CheckpointFormatException(File, $"storage '{Text.TerminalText.Sanitize(key)}' is used by a tensor but missing from the file");
        return root;
    }

    TorchStorage Storage(object? pid, bool legacy)
    {
        if (pid is not PickleTuple { Items: var a } || a.Length < 5 || a[0] is not "storage")
            throw new CheckpointFormatException(File, "persistent id is not a ('storage', type, key, location, size) tuple");
        if (a[1] is not PickleGlobal { Module: "torch" } type || !RestrictedUnpickler.StorageTypes.TryGetValue(type.Name, out var dtype))
            throw new CheckpointFormatException(File, "persistent id names no torch storage type");
        if (a[2] is not string key || key.Length == 0 || key.Contains('/') || key.Contains(".."))
            throw new CheckpointFormatException(File, "persistent id has a malformed storage key");
        if (a[4] is not long numel || numel < 0) throw new CheckpointFormatException(File, $"storage '{key}': size is not a non-negative integer");
        if (_storageTypes.TryGetValue(key, out var earlier) && earlier != dtype)
            throw new CheckpointFormatException(File, $"storage '{key}' is used as both {earlier} and {dtype}");
        _storageTypes[key] = dtype;
        if (!legacy)
        {
            var entry = _zip!.GetEntry(_prefix + "data/" + key)
                ?? throw new CheckpointFormatException(File, $"storage '{key}': no entry data/{key} in the archive");
            if (entry.Length < numel * DTypes.SizeOf(dtype))
                throw new CheckpointFormatException(File, $"storage '{key}': data/{key} holds {entry.Length} bytes, {numel} {dtype} elements need {numel * DTypes.SizeOf(dtype)}");
            return new TorchStorage(key, dtype, numel, 0);
        }
        if (a.Length < 6 || a[5] is null) return new TorchStorage(key, dtype, numel, 0);
        if (a[5] is PickleTuple { Items: [string, long offset, long size] } && offset >= 0 && size >= 0 && offset + size <= numel)
            return new TorchStorage(key, dtype, size, offset);
        throw new CheckpointFormatException(File, $"storage '{key}': malformed view (offset, size)");
    }

    /// <summary>Copies <paramref name="count"/> elements of a storage, from element <paramref name="first"/>, into <paramref name="destination"/>.</summary>
    public unsafe void Read(TorchStorage storage, long first, long count, IntPtr destination)
    {
        int size = DTypes.SizeOf(storage.DType);
        long byteStart = (storage.ElementOffset + first) * size;
        long byteCount = count * size;
        if (_zip is null)
        {
            var (offset, numel) = _legacyStorages[storage.Key];
            if (storage.ElementOffset + first + count > numel)
                throw new CheckpointFormatException(File, $"storage '{storage.Key}' is shorter than its tensors need");
            for (long done = 0; done < byteCount;)
            {
                int chunk = (int)Math.Min(byteCount - done, 1 << 30);
                int n = RandomAccess.Read(_opened.Handle, new Span<byte>((byte*)destination + done, chunk), offset + byteStart + done);
                if (n == 0) throw new CheckpointFormatException(File, $"storage '{storage.Key}': the file shrank while being read");
                done += n;
            }
            return;
        }
        lock (_lock)
        {
            var entry = _zip.GetEntry(_prefix + "data/" + storage.Key)!;
            using var s = entry.Open();
            var skip = new byte[1 << 16];
            for (long left = byteStart; left > 0;)
            {
                int n = s.Read(skip, 0, (int)Math.Min(left, skip.Length));
                if (n == 0) throw new CheckpointFormatException(File, $"storage '{storage.Key}' ends early");
                left -= n;
            }
            for (long done = 0; done < byteCount;)
            {
                int chunk = (int)Math.Min(byteCount - done, 1 << 30);
                int n = s.Read(new Span<byte>((byte*)destination + done, chunk));
                if (n == 0) throw new CheckpointFormatException(File, $"storage '{storage.Key}' ends early");
                done += n;
            }
        }
    }

    /// <summary>Closes the file.</summary>
    public void Dispose()
    {
        _zip?.Dispose();
        _stream.Dispose();
        _opened.Dispose();
    }
}
