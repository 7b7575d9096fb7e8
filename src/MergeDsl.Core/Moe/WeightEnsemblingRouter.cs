using MergeDsl.Core.Models;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using MergeDsl.Core.Torch;

namespace MergeDsl.Core.Moe;

/// <summary>
/// WEMoE router r(h) → [.., N], no softmax. Depth 0: a learned constant (<c>bias</c> [N]); depth 1:
/// <c>0</c> = Linear(d, N); depth 2: <c>0</c> = Linear(d, d), ReLU, <c>2</c> = Linear(d, N)
/// (nn.Sequential numbering, as in FusionBench). Weights ~ N(0, 0.01²), hidden bias 0, output bias λ,
/// so at initialisation r ≈ λ for every expert and the module is the task-arithmetic MLP.
/// </summary>
public sealed class WeightEnsemblingRouter : NamedModule
{
    readonly ClipLinear? first, last;
    readonly Parameter? constant;

    /// <summary>0, 1 or 2.</summary>
    public int Depth { get; }
    /// <summary>Number of experts N.</summary>
    public int NumExperts { get; }

    /// <summary>Creates a router reading <paramref name="inFeatures"/>-wide inputs; weights drawn from <paramref name="generator"/> (global when null).</summary>
    public WeightEnsemblingRouter(string fullName, long inFeatures, int numExperts, int depth, double initLambda, Generator? generator = null) : base(fullName)
    {
        if (depth is < 0 or > 2) throw new ArgumentException($"router depth must be 0, 1 or 2, got {depth}");
        if (numExperts < 1) throw new ArgumentException("a router needs at least one expert");
        Depth = depth; NumExperts = numExperts;
        using var _ = no_grad();
        switch (depth)
        {
            case 0:
                constant = Filled([numExperts], initLambda);
                register_parameter("bias", constant);
                break;
            case 1:
                last = new ClipLinear(fullName + ".0", inFeatures, numExperts);
                Init(last, initLambda, generator);
                register_module("0", last);
                break;
            default:
                first = new ClipLinear(fullName + ".0", inFeatures, inFeatures);
                last = new ClipLinear(fullName + ".2", inFeatures, numExperts);
                Init(first, 0.0, generator);
                Init(last, initLambda, generator);
                register_module("0", first);
                register_module("2", last);
                break;
        }
    }

    static void Init(ClipLinear l, double bias, Generator? generator)
    {
        l.Weight.normal_(0.0, 0.01, generator);
        l.Bias!.FillWith(bias);
    }

    /// <summary>Routing weights [.., N] for inputs [.., d].</summary>
    public override Tensor forward(Tensor h) => Depth switch
    {
        0 => P(constant!, "bias").expand([.. h.shape[..^1], NumExperts]),
        1 => last!.forward(h),
        _ => last!.forward(nn.functional.relu(first!.forward(h))),
    };
}
