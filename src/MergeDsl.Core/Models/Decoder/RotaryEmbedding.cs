using TorchSharp;
using static TorchSharp.torch;
using MergeDsl.Core.Torch;

namespace MergeDsl.Core.Models.Decoder;

/// <summary>
/// Rotary position embeddings in Hugging Face's convention: frequencies θ^(−2i/d) for i &lt; d/2, each used
/// twice as <c>cat(freqs, freqs)</c>, and the rotation <c>x·cos + rotate_half(x)·sin</c> with
/// <c>rotate_half(x) = cat(−x[d/2:], x[:d/2])</c>. That pairs dimension i with i + d/2 (not 2i with 2i+1,
/// as Meta's original code did): HF checkpoints store q_proj/k_proj rows permuted for exactly this.
/// A <c>rope_scaling</c> (<see cref="RopeScaling"/>) rescales the frequencies before the table is built.
/// Holds no parameters; the cos/sin table is computed once for every position up to the model's limit.
/// </summary>
public sealed class RotaryEmbedding : IDisposable
{
    readonly Tensor cos, sin;     // [maxPositions, headDim]

    /// <summary>
    /// Builds the table for positions 0 .. <paramref name="maxPositions"/> − 1, with the inverse frequencies of
    /// <see cref="InverseFrequencies"/> (scaled when <paramref name="scaling"/> is given).
    /// </summary>
    public RotaryEmbedding(int headDim, double theta, int maxPositions, RopeScaling? scaling = null)
    {
        using var _ = NewDisposeScope();
        var invFreq = torch.tensor(InverseFrequencies(headDim, theta, scaling));
        var positions = torch.arange(0, maxPositions, 1, ScalarType.Float32);
        var freqs = torch.outer(positions, invFreq);
        var emb = torch.cat([freqs, freqs], -1);
        cos = emb.cos().MoveToOuterDisposeScope();
        sin = emb.sin().MoveToOuterDisposeScope();
    }

    /// <summary>The table a model of <paramref name="config"/> uses: its head width, <c>rope_theta</c>, <c>rope_scaling</c> and context.</summary>
    public static RotaryEmbedding FromConfig(DecoderConfig config)
        => new(config.HeadDim, config.RopeTheta, config.MaxPositionEmbeddings, config.RopeScaling);

    /// <summary>The headDim / 2 inverse frequencies θ^(−2i/d) (radians per position), each passed through <paramref name="scaling"/> when given.</summary>
    public static float[] InverseFrequencies(int headDim, double theta, RopeScaling? scaling = null)
    {
        using var _ = NewDisposeScope();
        // float32, as transformers computes inv_freq and the angles: float64 would be more exact at long contexts
        // but would differ from the reference implementation checkpoints are evaluated with. The scaling is a
        // per-frequency formula evaluated in double on the float32 frequencies and rounded back, within an ulp of
        // transformers' float32 evaluation of the same formula.
        var exponents = torch.arange(0, headDim, 2, ScalarType.Float32).Over(headDim);
        var invFreq = exponents.Times(Math.Log(theta)).exp().reciprocal().data<float>().ToArray();
        return scaling is null ? invFreq : invFreq.Select(f => (float)scaling.ScaleInverseFrequency(f)).ToArray();
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
