using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using TorchSharp;
using static TorchSharp.torch;

namespace MergeDsl.Core.Data;

/// <summary>
/// A minimal safetensors reader/writer for the data cache, model zoo and eval exports (U8, I64 and F32
/// tensors only, one file, whole file in memory). It is separate from the streaming checkpoint I/O of
/// MergeDsl.Core.Checkpoints on purpose: these files are small and written once by the task pool.
/// </summary>
public static class TensorFile
{
    static readonly Dictionary<ScalarType, (string Name, int Size)> Types = new()
    {
        [ScalarType.Byte] = ("U8", 1),
        [ScalarType.Int64] = ("I64", 8),
        [ScalarType.Float32] = ("F32", 4),
    };

    /// <summary>
    /// Writes tensors to <paramref name="path"/> atomically (temporary file, then rename), names sorted.
    /// </summary>
    public static void Write(string path, IReadOnlyDictionary<string, Tensor> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        var names = tensors.Keys.OrderBy(n => n, StringComparer.Ordinal).ToList();
        var blobs = new List<byte[]>();
        var header = new Dictionary<string, object>();
        if (metadata is { Count: > 0 }) header["__metadata__"] = metadata;
        long offset = 0;
        foreach (var name in names)
        {
            var t = tensors[name];
            if (!Types.TryGetValue(t.dtype, out var ty))
                throw new ArgumentException($"{path}: tensor '{name}' has dtype {t.dtype}; only uint8, int64 and float32 are written");
            var bytes = Bytes(t);
            header[name] = new Dictionary<string, object>
            {
                ["dtype"] = ty.Name,
                ["shape"] = t.shape,
                ["data_offsets"] = new[] { offset, offset + bytes.Length },
            };
            offset += bytes.Length;
            blobs.Add(bytes);
        }
        var json = Encoding.UTF8.GetBytes(JsonSerializer.Serialize(header));
        int pad = (8 - json.Length % 8) % 8;
        var headerBytes = new byte[json.Length + pad];
        json.CopyTo(headerBytes, 0);
        for (int i = json.Length; i < headerBytes.Length; i++) headerBytes[i] = (byte)' ';
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
        var tmp = path + ".tmp-" + Guid.NewGuid().ToString("N")[..8];
        using (var fs = File.Create(tmp))
        {
            var len = new byte[8];
            BinaryPrimitives.WriteUInt64LittleEndian(len, (ulong)headerBytes.Length);
            fs.Write(len);
            fs.Write(headerBytes);
            foreach (var b in blobs) fs.Write(b);
        }
        File.Move(tmp, path, overwrite: true);
    }

    static byte[] Bytes(Tensor t)
    {
        using var c = t.detach().cpu().contiguous();
        return c.dtype switch
        {
            ScalarType.Byte => c.data<byte>().ToArray(),
            ScalarType.Int64 => MemoryMarshalBytes(c.data<long>().ToArray()),
            ScalarType.Float32 => MemoryMarshalBytes(c.data<float>().ToArray()),
            _ => throw new ArgumentException($"unsupported dtype {c.dtype}"),
        };
    }

    static byte[] MemoryMarshalBytes<T>(T[] values) where T : unmanaged =>
        System.Runtime.InteropServices.MemoryMarshal.AsBytes(values.AsSpan()).ToArray();

    /// <summary>Reads every tensor of a file written by <see cref="Write"/> (or any U8/I64/F32 safetensors file).</summary>
    public static Dictionary<string, Tensor> Read(string path) => Read(path, out _);

    /// <summary>Reads every tensor and the <c>__metadata__</c> map.</summary>
    public static Dictionary<string, Tensor> Read(string path, out Dictionary<string, string> metadata)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"{path}: file not found", path);
        var raw = File.ReadAllBytes(path);
        if (raw.Length < 8) throw new InvalidDataException($"{path}: too short for a safetensors header");
        ulong n = BinaryPrimitives.ReadUInt64LittleEndian(raw);
        if (n > (ulong)(raw.Length - 8)) throw new InvalidDataException($"{path}: header length {n} exceeds the file");
        var baseOffset = 8 + (long)n;
        using var doc = JsonDocument.Parse(raw.AsMemory(8, (int)n));
        metadata = new Dictionary<string, string>();
        var result = new Dictionary<string, Tensor>();
        foreach (var prop in doc.RootElement.EnumerateObject())
        {
            if (prop.Name == "__metadata__")
            {
                foreach (var m in prop.Value.EnumerateObject()) metadata[m.Name] = m.Value.GetString() ?? "";
                continue;
            }
            var dtype = prop.Value.GetProperty("dtype").GetString();
            var shape = prop.Value.GetProperty("shape").EnumerateArray().Select(e => e.GetInt64()).ToArray();
            var offs = prop.Value.GetProperty("data_offsets").EnumerateArray().Select(e => e.GetInt64()).ToArray();
            long begin = baseOffset + offs[0], end = baseOffset + offs[1];
            if (offs[0] < 0 || end > raw.Length || begin > end)
                throw new InvalidDataException($"{path}: tensor '{prop.Name}' lies outside the file");
            var span = raw.AsSpan((int)begin, (int)(end - begin));
            long count = shape.Aggregate(1L, (a, b) => a * b);
            Tensor t = dtype switch
            {
                "U8" => tensor(span.ToArray(), shape, ScalarType.Byte),
                "I64" => tensor(System.Runtime.InteropServices.MemoryMarshal.Cast<byte, long>(span).ToArray(), shape),
                "F32" => tensor(System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(span).ToArray(), shape),
                _ => throw new InvalidDataException($"{path}: tensor '{prop.Name}' has dtype {dtype}; expected U8, I64 or F32"),
            };
            if (t.numel() != count) throw new InvalidDataException($"{path}: tensor '{prop.Name}' size does not match its shape");
            result[prop.Name] = t;
        }
        return result;
    }
}
