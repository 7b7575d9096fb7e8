using TorchSharp;

namespace MergeDsl.Core.Ops;

/// <summary>What a random sparsifier asks for: uniform noise for one stack entry of one parameter.</summary>
/// <param name="Parameter">The parameter name.</param>
/// <param name="Position">The entry's position in the stack being sparsified (0 for a tensor).</param>
/// <param name="Shape">The tensor's shape.</param>
/// <param name="Seed">The merge seed.</param>
public sealed record NoiseRequest(string Parameter, int Position, long[] Shape, long Seed);

/// <summary>
/// Uniform [0, 1) noise that drives DARE and DELLA masks: an entry is kept when its noise is below
/// its keep probability. Replaceable so tests can fix the mask exactly.
/// </summary>
public delegate torch.Tensor NoiseSource(NoiseRequest request);

/// <summary>The default noise: float32 uniform from a CPU torch.Generator seeded by <see cref="Seeding.For"/>.</summary>
public static class SeededNoise
{
    /// <summary>Generates the noise on the CPU (so CPU and CUDA runs draw the same masks).</summary>
    public static torch.Tensor Uniform(NoiseRequest r)
    {
        using var gen = new torch.Generator(Seeding.For(r.Seed, r.Parameter, r.Position));
        return torch.rand(r.Shape, dtype: torch.ScalarType.Float32, generator: gen);
    }

    /// <summary>The default <see cref="NoiseSource"/>.</summary>
    public static NoiseSource Default { get; } = Uniform;
}
