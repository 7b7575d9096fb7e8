using TorchSharp;

namespace MergeDsl.Core.Checkpoints;

/// <summary>The element types a safetensors file can hold.</summary>
public enum DType
{
    /// <summary>IEEE 754 double.</summary>
    F64,
    /// <summary>IEEE 754 single.</summary>
    F32,
    /// <summary>IEEE 754 half.</summary>
    F16,
    /// <summary>bfloat16.</summary>
    BF16,
    /// <summary>Signed 64-bit integer.</summary>
    I64,
    /// <summary>Signed 32-bit integer.</summary>
    I32,
    /// <summary>Signed 16-bit integer.</summary>
    I16,
    /// <summary>Signed 8-bit integer.</summary>
    I8,
    /// <summary>Unsigned 8-bit integer.</summary>
    U8,
    /// <summary>Boolean, one byte per element.</summary>
    Bool,
    /// <summary>8-bit float, 4 exponent bits, 3 mantissa bits.</summary>
    F8E4M3,
    /// <summary>8-bit float, 5 exponent bits, 2 mantissa bits.</summary>
    F8E5M2,
}

/// <summary>Facts about <see cref="DType"/> and its mapping to safetensors names and torch types.</summary>
public static class DTypes
{
    /// <summary>Every dtype, in declaration order.</summary>
    public static IReadOnlyList<DType> All { get; } = Enum.GetValues<DType>();

    /// <summary>Bytes per element.</summary>
    public static int SizeOf(DType d) => d switch
    {
        DType.F64 or DType.I64 => 8,
        DType.F32 or DType.I32 => 4,
        DType.F16 or DType.BF16 or DType.I16 => 2,
        DType.I8 or DType.U8 or DType.Bool or DType.F8E4M3 or DType.F8E5M2 => 1,
        _ => throw new ArgumentOutOfRangeException(nameof(d), d, "unknown dtype"),
    };

    /// <summary>The name safetensors headers use: "F32", "BF16", "F8_E4M3", "BOOL", ...</summary>
    public static string ToSafetensorsName(DType d) => d switch
    {
        DType.Bool => "BOOL",
        DType.F8E4M3 => "F8_E4M3",
        DType.F8E5M2 => "F8_E5M2",
        _ => d.ToString(),
    };

    /// <summary>Parses a safetensors dtype name; throws <see cref="ArgumentException"/> on an unknown one.</summary>
    public static DType ParseSafetensorsName(string s) =>
        TryParseSafetensorsName(s, out var d) ? d : throw new ArgumentException($"unknown safetensors dtype '{s}'", nameof(s));

    /// <summary>Parses a safetensors dtype name (case-sensitive, as the format specifies).</summary>
    public static bool TryParseSafetensorsName(string s, out DType d)
    {
        foreach (var candidate in All)
        {
            if (ToSafetensorsName(candidate) == s) { d = candidate; return true; }
        }
        d = default;
        return false;
    }

    /// <summary>
    /// The torch element type. TorchSharp 0.107 has no Float8 scalar types, so F8 dtypes throw
    /// <see cref="NotSupportedException"/>; checkpoints load them as raw bytes (see <see cref="LoadedAs"/>).
    /// </summary>
    public static torch.ScalarType ToTorch(DType d) => d switch
    {
        DType.F64 => torch.ScalarType.Float64,
        DType.F32 => torch.ScalarType.Float32,
        DType.F16 => torch.ScalarType.Float16,
        DType.BF16 => torch.ScalarType.BFloat16,
        DType.I64 => torch.ScalarType.Int64,
        DType.I32 => torch.ScalarType.Int32,
        DType.I16 => torch.ScalarType.Int16,
        DType.I8 => torch.ScalarType.Int8,
        DType.U8 => torch.ScalarType.Byte,
        DType.Bool => torch.ScalarType.Bool,
        DType.F8E4M3 or DType.F8E5M2 => throw new NotSupportedException(
            $"{ToSafetensorsName(d)}: TorchSharp 0.107 has no Float8 scalar type; such tensors load as raw bytes (U8)"),
        _ => throw new ArgumentOutOfRangeException(nameof(d), d, "unknown dtype"),
    };

    /// <summary>
    /// The torch element type a tensor of this dtype has once loaded: <see cref="ToTorch"/>, except that
    /// F8 tensors load as their raw bytes (<c>Byte</c>, same shape).
    /// </summary>
    public static torch.ScalarType LoadedAs(DType d) =>
        d is DType.F8E4M3 or DType.F8E5M2 ? torch.ScalarType.Byte : ToTorch(d);

    /// <summary>The dtype of a torch element type; throws <see cref="NotSupportedException"/> for complex/quantized types.</summary>
    public static DType FromTorch(torch.ScalarType t) => t switch
    {
        torch.ScalarType.Float64 => DType.F64,
        torch.ScalarType.Float32 => DType.F32,
        torch.ScalarType.Float16 => DType.F16,
        torch.ScalarType.BFloat16 => DType.BF16,
        torch.ScalarType.Int64 => DType.I64,
        torch.ScalarType.Int32 => DType.I32,
        torch.ScalarType.Int16 => DType.I16,
        torch.ScalarType.Int8 => DType.I8,
        torch.ScalarType.Byte => DType.U8,
        torch.ScalarType.Bool => DType.Bool,
        _ => throw new NotSupportedException($"torch type {t} has no safetensors dtype"),
    };

    /// <summary>True for F64, F32, F16, BF16 and the F8 types.</summary>
    public static bool IsFloatingPoint(DType d) =>
        d is DType.F64 or DType.F32 or DType.F16 or DType.BF16 or DType.F8E4M3 or DType.F8E5M2;

    /// <summary>True for the F8 types, which TorchSharp can only hold as raw bytes.</summary>
    public static bool IsFloat8(DType d) => d is DType.F8E4M3 or DType.F8E5M2;
}
