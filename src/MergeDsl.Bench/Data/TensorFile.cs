using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using TorchSharp;
using MergeDsl.Core.Checkpoints;
using static TorchSharp.torch;

namespace MergeDsl.Bench.Data;

/// <summary>
/// Single-file safetensors for the data cache, model zoo and eval exports. Writing is a small whole-file
/// writer (U8, I64 and F32; the checkpoint writer produces model folders, not single files); reading goes
/// through the validating <see cref="Checkpoint"/> reader.
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

    /// <summary>
    /// Reads every tensor and the <c>__metadata__</c> map through the validating checkpoint reader; the
    /// tensors are copies, so nothing stays mapped.
    /// </summary>
    public static Dictionary<string, Tensor> Read(string path, out Dictionary<string, string> metadata)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"{path}: file not found", path);
        using var file = Checkpoint.Open(path);
        metadata = new Dictionary<string, string>(file.Metadata);
        var result = new Dictionary<string, Tensor>();
        foreach (var info in file.Tensors)
        {
            using var view = file.Load(info.Name);
            result[info.Name] = view.clone();
        }
        return result;
    }
}
