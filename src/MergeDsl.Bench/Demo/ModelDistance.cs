using MergeDsl.Core.Checkpoints;
using static TorchSharp.torch;

namespace MergeDsl.Bench.Demo;

/// <summary>How far apart two models lie, as the demo shows it.</summary>
public static class ModelDistance
{
    /// <summary>
    /// Euclidean distance over every parameter of <paramref name="model"/> to the same-named tensors of
    /// <paramref name="other"/>, summed in float64.
    /// </summary>
    public static double L2(IReadOnlyDictionary<string, Tensor> model, ITensorSource other)
    {
        double squares = 0;
        foreach (var (name, x) in model)
        {
            using var scope = NewDisposeScope();
            using var y = other.Load(name);
            squares += x.to(ScalarType.Float64).sub(y.to(ScalarType.Float64)).square().sum().item<double>();
        }
        return Math.Sqrt(squares);
    }
}
