using System.Buffers.Binary;
using System.IO.Compression;

namespace MergeDsl.Bench.Data;

/// <summary>
/// Reads the IDX format of (Fashion-)MNIST: big-endian magic (0x0000 type dims), big-endian int32 dimension
/// sizes, then the data. Only unsigned bytes (type 0x08) occur in these files. Gzipped files (as Debian ships
/// them) are recognised by their magic bytes.
/// </summary>
public static class IdxReader
{
    /// <summary>Reads an IDX file; returns its dimensions and bytes.</summary>
    public static (int[] Dims, byte[] Data) Read(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"{path}: IDX file not found", path);
        byte[] raw = File.ReadAllBytes(path);
        if (raw.Length >= 2 && raw[0] == 0x1f && raw[1] == 0x8b)
        {
            using var gz = new GZipStream(new MemoryStream(raw), CompressionMode.Decompress);
            using var ms = new MemoryStream();
            gz.CopyTo(ms);
            raw = ms.ToArray();
        }
        return Parse(raw, path);
    }

    /// <summary>Parses the bytes of an uncompressed IDX file (<paramref name="label"/> names it in errors).</summary>
    public static (int[] Dims, byte[] Data) Parse(byte[] raw, string label)
    {
        if (raw.Length < 4) throw new InvalidDataException($"{label}: too short for an IDX header ({raw.Length} bytes)");
        if (raw[0] != 0 || raw[1] != 0) throw new InvalidDataException($"{label}: not an IDX file (bad magic)");
        if (raw[2] != 0x08) throw new InvalidDataException($"{label}: IDX element type 0x{raw[2]:x2} is not unsigned byte (0x08)");
        int ndims = raw[3];
        if (ndims < 1 || raw.Length < 4 + 4 * ndims)
            throw new InvalidDataException($"{label}: IDX header with {ndims} dimensions is truncated");
        var dims = new int[ndims];
        long count = 1;
        for (int i = 0; i < ndims; i++)
        {
            dims[i] = BinaryPrimitives.ReadInt32BigEndian(raw.AsSpan(4 + 4 * i, 4));
            if (dims[i] < 0) throw new InvalidDataException($"{label}: negative IDX dimension {dims[i]}");
            count *= dims[i];
        }
        int offset = 4 + 4 * ndims;
        if (raw.Length - offset != count)
            throw new InvalidDataException(
                $"{label}: IDX dimensions [{string.Join(", ", dims)}] need {count} bytes but the file holds {raw.Length - offset}");
        return (dims, raw.AsSpan(offset).ToArray());
    }

    /// <summary>Reads an image file ([N, H, W]) and its label file ([N]) into an <see cref="ImageSet"/>.</summary>
    public static ImageSet ReadImageSet(string imagesPath, string labelsPath)
    {
        var (idims, pixels) = Read(imagesPath);
        var (ldims, labels) = Read(labelsPath);
        if (idims.Length != 3) throw new InvalidDataException($"{imagesPath}: expected 3 IDX dimensions [N, H, W], got {idims.Length}");
        if (ldims.Length != 1) throw new InvalidDataException($"{labelsPath}: expected 1 IDX dimension [N], got {ldims.Length}");
        if (idims[0] != ldims[0])
            throw new InvalidDataException($"{labelsPath}: {ldims[0]} labels for {idims[0]} images in {imagesPath}");
        return new ImageSet(pixels, labels.Select(b => (long)b).ToArray(), idims[1], idims[2]).Validate(imagesPath);
    }
}
