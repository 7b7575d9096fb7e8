using MergeDsl.Core.Models;
using static TorchSharp.torch;

namespace MergeDsl.Core.Moe.Sparse;

/// <summary>
/// One SwiGLU expert, down(silu(gate(x)) · up(x)), without biases. Mixtral names its projections
/// <c>w1</c> (gate), <c>w3</c> (up) and <c>w2</c> (down); Qwen2-MoE and DeepSeek-MoE (and their shared experts)
/// use <c>gate_proj</c>, <c>up_proj</c>, <c>down_proj</c>.
/// </summary>
public sealed class SparseExpert : NamedModule
{
    /// <summary>The gate projection (hidden → width).</summary>
    public ClipLinear Gate { get; }
    /// <summary>The up projection (hidden → width).</summary>
    public ClipLinear Up { get; }
    /// <summary>The down projection (width → hidden).</summary>
    public ClipLinear Down { get; }

    /// <summary>Creates an expert under <paramref name="fullName"/> with Mixtral's names when <paramref name="mixtralNames"/>.</summary>
    public SparseExpert(string fullName, long hidden, long width, bool mixtralNames) : base(fullName)
    {
        var (g, u, d) = mixtralNames ? ("w1", "w3", "w2") : ("gate_proj", "up_proj", "down_proj");
        Gate = new ClipLinear($"{fullName}.{g}", hidden, width, bias: false);
        Up = new ClipLinear($"{fullName}.{u}", hidden, width, bias: false);
        Down = new ClipLinear($"{fullName}.{d}", width, hidden, bias: false);
        register_module(g, Gate);
        register_module(u, Up);
        register_module(d, Down);
    }

    /// <inheritdoc/>
    public override Tensor forward(Tensor x) => Down.forward(nn.functional.silu(Gate.forward(x)).mul(Up.forward(x)));
}
