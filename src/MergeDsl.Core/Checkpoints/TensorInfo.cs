namespace MergeDsl.Core.Checkpoints;

/// <summary>Where one tensor lives: its name, element type, shape, and byte range inside <paramref name="File"/>.</summary>
/// <param name="Name">The tensor's name in the checkpoint.</param>
/// <param name="DType">Element type.</param>
/// <param name="Shape">Dimensions; empty for a scalar.</param>
/// <param name="File">The shard file (or source label) holding the bytes.</param>
/// <param name="DataOffset">Absolute byte offset of the first element in <paramref name="File"/>.</param>
/// <param name="ByteLength">Number of bytes: element count times dtype size.</param>
public sealed record TensorInfo(string Name, DType DType, long[] Shape, string File, long DataOffset, long ByteLength)
{
    /// <summary>Product of <see cref="Shape"/> (1 for a scalar, 0 when any dimension is 0).</summary>
    public long ElementCount
    {
        get
        {
            long n = 1;
            foreach (long d in Shape) n *= d;
            return n;
        }
    }

    /// <summary>The shape as safetensors prints it, e.g. "[768, 3072]".</summary>
    public string ShapeText => "[" + string.Join(", ", Shape) + "]";
}
