using static TorchSharp.torch;

namespace MergeDsl.Core.Models.Decoder;

/// <summary>
/// HF <c>LlamaMLP</c>: down_proj(silu(gate_proj(x)) · up_proj(x)), with names <c>gate_proj</c>, <c>up_proj</c>,
/// <c>down_proj</c> (weights [out, in]; biases only with Llama's <c>mlp_bias</c>).
/// </summary>
public sealed class SwiGluMlp : DecoderMlp
{
    readonly ClipLinear gate, up, down;

    /// <summary>Creates the MLP under <paramref name="fullName"/> (<c>model.layers.N.mlp</c>).</summary>
    public SwiGluMlp(string fullName, long hidden, long intermediate, bool bias) : base(fullName)
    {
        gate = new ClipLinear(fullName + ".gate_proj", hidden, intermediate, bias);
        up = new ClipLinear(fullName + ".up_proj", hidden, intermediate, bias);
        down = new ClipLinear(fullName + ".down_proj", intermediate, hidden, bias);
        register_module("gate_proj", gate);
        register_module("up_proj", up);
        register_module("down_proj", down);
    }

    /// <inheritdoc/>
    public override string LocalName => "mlp";

    /// <inheritdoc/>
    public override Tensor forward(Tensor x) => down.forward(nn.functional.silu(gate.forward(x)).mul(up.forward(x)));
}
