using TorchSharp.Modules;
using static TorchSharp.torch;
using MergeDsl.Core.Torch;

namespace MergeDsl.Core.Models.Decoder;

/// <summary>
/// HF <c>LlamaRMSNorm</c>: x / sqrt(mean(x²) + eps) · weight, normalised in float32 as transformers does
/// (so half-precision inputs do not lose the mean of squares).
/// </summary>
public sealed class RmsNorm : NamedModule
{
    readonly double eps;

    /// <summary>Scale [dim] (<c>weight</c>), initialised to ones.</summary>
    public Parameter Weight { get; }

    /// <summary>Creates the norm under <paramref name="fullName"/>.</summary>
    public RmsNorm(string fullName, long dim, double eps) : base(fullName)
    {
        this.eps = eps;
        Weight = Filled([dim], 1.0);
        register_parameter("weight", Weight);
    }

    /// <inheritdoc/>
    public override Tensor forward(Tensor x)
    {
        var dtype = x.dtype;
        var h = x.to_type(ScalarType.Float32);
        var variance = h.pow(2).mean([-1L], keepdim: true);
        h = h.mul(variance.Plus(eps).rsqrt());
        return P(Weight, "weight").mul(h.to_type(dtype));
    }
}
