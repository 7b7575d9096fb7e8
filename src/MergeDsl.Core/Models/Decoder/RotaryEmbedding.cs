using TorchSharp;
using static TorchSharp.torch;
using MergeDsl.Core.Torch;

namespace MergeDsl.Core.Models.Decoder;

/// <summary>
/// Rotary position embeddings in Hugging Face's convention: frequencies θ^(−2i/d) for i &lt; d/2, each used
/// twice as <c>cat(freqs, freqs)</c>, and the rotation <c>x·cos + rotate_half(x)·sin</c> with
/// <c>rotate_half(x) = cat(−x[d/2:], x[:d/2])</c>. That pairs dimension i with i + d/2 (not 2i with 2i+1,
/// as Meta's original code did): HF checkpoints store q_proj/k_proj rows permuted for exactly this.
/// Holds no parameters; the cos/sin table is computed once for every position up to the model's limit.
/// </summary>
public sealed class RotaryEmbedding : IDisposable
{
    readonly Tensor cos, sin;     // [maxPositions, headDim]

    /// <summary>Builds the table for positions 0 .. <paramref name="maxPositions"/> − 1.</summary>
    public RotaryEmbedding(int headDim, double theta, int maxPositions)
    {
        using var _ = NewDisposeScope();
        // float32 throughout, as transformers computes inv_freq and the angles: float64 would be more exact at
        // long contexts but would differ from the reference implementation checkpoints are evaluated with.
        var exponents = torch.arange(0, headDim, 2, ScalarType.Float32).Over(headDim);
        var invFreq = exponents.Times(Math.Log(theta)).exp().reciprocal();
        var positions = torch.arange(0, maxPositions, 1, ScalarType.Float32);
        var freqs = torch.outer(positions, invFreq);
        var emb = torch.cat([freqs, freqs], -1);
        cos = emb.cos().MoveToOuterDisposeScope();
        sin = emb.sin().MoveToOuterDisposeScope();
    }

    /// <summary>cat(−x₂, x₁) over the last dimension.</summary>
    public static Tensor RotateHalf(Tensor x)
    {
        long half = x.shape[^1] / 2;
        return torch.cat([x.narrow(-1, half, half).neg(), x.narrow(-1, 0, half)], -1);
    }

    /// <summary>
    /// Rotates <paramref name="x"/> [B, heads, T, headDim] whose tokens sit at positions
    /// <paramref name="start"/> .. start + T − 1.
    /// </summary>
    public Tensor Apply(Tensor x, long start)
    {
        long t = x.shape[2];
        var c = cos.narrow(0, start, t).to(x.dtype, x.device);
        var s = sin.narrow(0, start, t).to(x.dtype, x.device);
        return x.mul(c).Plus(RotateHalf(x).mul(s));
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        cos.Dispose();
        sin.Dispose();
    }
}
