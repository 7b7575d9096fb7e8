using TorchSharp;
using static TorchSharp.torch;

namespace MergeDsl.Core.Moe.Sparse.Compression;

/// <summary>
/// One SwiGLU expert's weights: out = Down · (silu(Gate · x) ⊙ (Up · x)). Mixtral's names are w1 (gate),
/// w3 (up) and w2 (down). The tensors are the caller's; nothing here disposes them.
/// </summary>
/// <param name="Gate">Mixtral's <c>w1</c>, [intermediate, hidden].</param>
/// <param name="Up">Mixtral's <c>w3</c>, [intermediate, hidden].</param>
/// <param name="Down">Mixtral's <c>w2</c>, [hidden, intermediate].</param>
public sealed record ExpertWeights(Tensor Gate, Tensor Up, Tensor Down)
{
    /// <summary>The intermediate (neuron) count.</summary>
    public long Intermediate => Gate.shape[0];

    /// <summary>The expert's output for rows of <paramref name="x"/> [tokens, hidden] (the reference the tests use).</summary>
    public Tensor Apply(Tensor x)
        => nn.functional.linear(nn.functional.silu(nn.functional.linear(x, Gate)).mul(nn.functional.linear(x, Up)), Down);

    /// <summary>Throws <see cref="ArgumentException"/> unless the three shapes fit together and match <paramref name="other"/>'s.</summary>
    public void CheckSameShape(ExpertWeights other, string label)
    {
        CheckShapes(label);
        if (!Gate.shape.SequenceEqual(other.Gate.shape) || !Down.shape.SequenceEqual(other.Down.shape))
            throw new ArgumentException($"{label}: experts of different shapes ([{string.Join(", ", Gate.shape)}] and [{string.Join(", ", other.Gate.shape)}])");
    }

    /// <summary>Throws <see cref="ArgumentException"/> unless Gate and Up are [I, H] and Down is [H, I].</summary>
    public void CheckShapes(string label)
    {
        if (Gate.dim() != 2 || !Up.shape.SequenceEqual(Gate.shape) || Down.dim() != 2
            || Down.shape[0] != Gate.shape[1] || Down.shape[1] != Gate.shape[0])
            throw new ArgumentException($"{label}: expert shapes do not fit (gate [{string.Join(", ", Gate.shape)}], up [{string.Join(", ", Up.shape)}], down [{string.Join(", ", Down.shape)}])");
    }
}
