using MergeDsl.Core.Json;

namespace MergeDsl.Core.Checkpoints;

/// <summary>The validated content of one safetensors header.</summary>
internal sealed record SafetensorsHeader(IReadOnlyList<TensorInfo> Tensors, IReadOnlyDictionary<string, string> Metadata)
{
    /// <summary>Headers longer than this are refused before reading them (the reference reader does the same).</summary>
    public const long MaxHeaderBytes = 100_000_000;

    /// <summary>Bytes of header JSON after the 8-byte length prefix (the data area starts at 8 + this).</summary>
    public long HeaderLength { get; init; }

    /// <summary>
    /// Validates a whole safetensors file's structure: the length prefix, then the header against the
    /// file length. <paramref name="start"/> holds the file's first bytes, at least 8 + the declared header
    /// length where the file has them (the data area itself is not needed).
    /// </summary>
    public static SafetensorsHeader Validate(string file, ReadOnlySpan<byte> start, long fileLength)
    {
        if (fileLength < 8 || start.Length < 8)
            throw new CheckpointFormatException(file, $"file is {fileLength} bytes, shorter than the 8-byte header length");
        ulong declared = System.Buffers.Binary.BinaryPrimitives.ReadUInt64LittleEndian(start);
        long headerLength = CheckPrefix(file, fileLength, declared);
        if (start.Length < 8 + headerLength)
            throw new ArgumentException($"{file}: {start.Length} bytes given, the header needs {8 + headerLength}", nameof(start));
        long dataStart = 8 + headerLength;
        return Parse(file, start.Slice(8, (int)headerLength), dataStart, fileLength - dataStart) with { HeaderLength = headerLength };
    }

    /// <summary>
    /// Checks the 8-byte length prefix against the file length; returns the header length.
    /// </summary>
    public static long CheckPrefix(string file, long fileLength, ulong declared)
    {
        if (declared > MaxHeaderBytes)
            throw new CheckpointFormatException(file, $"header length {declared} is absurd (over {MaxHeaderBytes / 1_000_000} MB)");
        if ((long)declared > fileLength - 8)
            throw new CheckpointFormatException(file, $"header length {declared} runs past the end of the file ({fileLength} bytes)");
        if (declared < 2)
            throw new CheckpointFormatException(file, $"header length {declared} is too short for a JSON object");
        return (long)declared;
    }

    /// <summary>
    /// Parses and validates a header: JSON syntax (no duplicate keys), dtypes, shapes, offsets inside the
    /// data area, sizes matching shape times dtype, no overlaps or holes, string metadata.
    /// </summary>
    /// <param name="file">The file, for messages and <see cref="TensorInfo.File"/>.</param>
    /// <param name="header">The header's bytes.</param>
    /// <param name="dataStart">Absolute offset of the data area (8 + header length).</param>
    /// <param name="dataLength">Bytes in the data area.</param>
    public static SafetensorsHeader Parse(string file, ReadOnlySpan<byte> header, long dataStart, long dataLength)
    {
        JsonNode root;
        try
        {
            root = StrictJson.Parse(header);
        }
        catch (JsonSyntaxException e) when (e.Message.StartsWith("duplicate key", StringComparison.Ordinal))
        {
            throw new CheckpointFormatException(file, $"header has a {e.Message} (tensor names must be unique)");
        }
        catch (JsonSyntaxException e)
        {
            throw new CheckpointFormatException(file, $"header is not valid JSON: {e.Message}");
        }
        if (root is not JsonObject obj)
            throw new CheckpointFormatException(file, $"header is {root.Kind}, not a JSON object");

        var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
        var entries = new List<(TensorInfo Info, long Begin, long End)>();
        foreach (var (name, value) in obj.Members)
        {
            if (name == "__metadata__")
            {
                ReadMetadata(file, value, metadata);
                continue;
            }
            entries.Add(ReadTensor(file, name, value, dataStart, dataLength));
        }

        // Byte ranges must tile the data area exactly: sorted by start, each begins where the last ended.
        entries.Sort((a, b) => a.Begin != b.Begin ? a.Begin.CompareTo(b.Begin) : a.End.CompareTo(b.End));
        long cursor = 0;
        string? previous = null;
        foreach (var (info, begin, end) in entries)
        {
            if (begin < cursor)
                throw new CheckpointFormatException(file, $"tensors '{previous}' and '{info.Name}' overlap (bytes {begin}..{cursor} of the data area)");
            if (begin > cursor)
                throw new CheckpointFormatException(file, $"bytes {cursor}..{begin} of the data area belong to no tensor (hole before '{info.Name}')");
            cursor = end;
            previous = info.Name;
        }
        if (cursor != dataLength)
            throw new CheckpointFormatException(file, $"bytes {cursor}..{dataLength} of the data area belong to no tensor (trailing data)");

        return new SafetensorsHeader(entries.Select(e => e.Info).ToList(), metadata);
    }

    static void ReadMetadata(string file, JsonNode value, Dictionary<string, string> into)
    {
        if (value is not JsonObject meta)
            throw new CheckpointFormatException(file, $"__metadata__ is {value.Kind}, not an object of strings");
        foreach (var (k, v) in meta.Members)
        {
            if (v is not JsonString s)
                throw new CheckpointFormatException(file, $"__metadata__ value for '{k}' is {v.Kind}, not a string");
            into[k] = s.Value;
        }
    }

    static (TensorInfo, long, long) ReadTensor(string file, string name, JsonNode value, long dataStart, long dataLength)
    {
        string where = $"tensor '{name}'";
        if (value is not JsonObject t)
            throw new CheckpointFormatException(file, $"{where}: entry is {value.Kind}, not an object");

        if (t["dtype"] is not { } dtypeNode)
            throw new CheckpointFormatException(file, $"{where}: missing dtype");
        if (dtypeNode is not JsonString dtypeText)
            throw new CheckpointFormatException(file, $"{where}: dtype is {dtypeNode.Kind}, not a string");
        if (!DTypes.TryParseSafetensorsName(dtypeText.Value, out var dtype))
            throw new CheckpointFormatException(file, $"{where}: unknown dtype '{dtypeText.Value}' (expected one of {string.Join(", ", DTypes.All.Select(DTypes.ToSafetensorsName))})");

        var shape = ReadShape(file, where, t["shape"]);
        long elementSize = DTypes.SizeOf(dtype);
        long elements = 1;
        foreach (long d in shape)
        {
            // Overflow check against long.MaxValue / elementSize, so byte counts also fit.
            if (d != 0 && elements > long.MaxValue / elementSize / d)
                throw new CheckpointFormatException(file, $"{where}: shape [{string.Join(", ", shape)}] overflows a 64-bit byte count");
            elements *= d;
        }
        long needed = elements * elementSize;

        var (begin, end) = ReadOffsets(file, where, t["data_offsets"]);
        if (end > dataLength)
            throw new CheckpointFormatException(file, $"{where}: data_offsets [{begin}, {end}] lie outside the data area ({dataLength} bytes)");
        if (end - begin != needed)
            throw new CheckpointFormatException(file, $"{where}: data_offsets [{begin}, {end}] span {end - begin} bytes but shape [{string.Join(", ", shape)}] of {dtypeText.Value} needs {needed}");

        return (new TensorInfo(name, dtype, shape, file, dataStart + begin, needed), begin, end);
    }

    static long[] ReadShape(string file, string where, JsonNode? node)
    {
        if (node is null) throw new CheckpointFormatException(file, $"{where}: missing shape");
        if (node is not JsonArray dims)
            throw new CheckpointFormatException(file, $"{where}: shape is {node.Kind}, not an array of integers");
        var shape = new long[dims.Items.Count];
        for (int k = 0; k < shape.Length; k++)
        {
            if (dims.Items[k] is not JsonNumber n || !n.IsIntegerText)
                throw new CheckpointFormatException(file, $"{where}: shape entry {k} is {Describe(dims.Items[k])}, not an integer");
            if (n.Text.StartsWith('-'))
                throw new CheckpointFormatException(file, $"{where}: negative dimension {n.Text} in shape");
            if (!n.TryGetInt64(out shape[k]))
                throw new CheckpointFormatException(file, $"{where}: dimension {n.Text} in shape overflows a 64-bit integer");
        }
        return shape;
    }

    static (long, long) ReadOffsets(string file, string where, JsonNode? node)
    {
        if (node is null) throw new CheckpointFormatException(file, $"{where}: missing data_offsets");
        if (node is not JsonArray a || a.Items.Count != 2)
            throw new CheckpointFormatException(file, $"{where}: data_offsets must be [begin, end], got {Describe(node)}");
        var v = new long[2];
        for (int k = 0; k < 2; k++)
        {
            if (a.Items[k] is not JsonNumber n || !n.IsIntegerText || n.Text.StartsWith('-') || !n.TryGetInt64(out v[k]))
                throw new CheckpointFormatException(file, $"{where}: data_offsets must be two non-negative integers, got {Describe(node)}");
        }
        if (v[1] < v[0])
            throw new CheckpointFormatException(file, $"{where}: data_offsets [{v[0]}, {v[1]}] end before they begin");
        return (v[0], v[1]);
    }

    static string Describe(JsonNode n) => n switch
    {
        JsonNumber num => num.Text,
        JsonString s => $"\"{s.Value}\"",
        JsonArray a => "[" + string.Join(", ", a.Items.Select(Describe)) + "]",
        _ => n.Kind,
    };
}
