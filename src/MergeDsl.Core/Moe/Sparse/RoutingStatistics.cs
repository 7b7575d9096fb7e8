using MergeDsl.Core.Models.Decoder;
using TorchSharp;
using static TorchSharp.torch;

namespace MergeDsl.Core.Moe.Sparse;

/// <summary>
/// Counts, per sparse layer, how often each expert is chosen and how many experts tokens use, over every forward
/// pass run while it is attached (from construction to <see cref="Dispose"/>). Every routed token counts, padding
/// included: score sequences of equal length (or one at a time) when padding must not count.
/// </summary>
public sealed class RoutingStatistics : IRoutingObserver, IDisposable
{
    readonly IReadOnlyList<SparseMoeBlock> blocks;
    readonly Dictionary<int, long[]> usage = new();
    readonly Dictionary<int, double[]> probabilityMass = new();
    readonly Dictionary<int, long> tokens = new();
    readonly Dictionary<int, long> chosen = new();

    /// <summary>Attaches to every sparse block of <paramref name="model"/>.</summary>
    /// <exception cref="InvalidOperationException">A block already has an observer.</exception>
    public RoutingStatistics(DecoderModel model)
    {
        blocks = SparseMoe.Blocks(model);
        var busy = blocks.FirstOrDefault(b => b.Observer is not null);
        if (busy is not null) throw new InvalidOperationException($"{busy.FullName} already has a routing observer");
        foreach (var b in blocks)
        {
            usage[b.LayerIndex] = new long[b.NumExperts];
            probabilityMass[b.LayerIndex] = new double[b.NumExperts];
            tokens[b.LayerIndex] = 0;
            chosen[b.LayerIndex] = 0;
            b.Observer = this;
        }
    }

    /// <summary>The sparse layers observed, in order.</summary>
    public IReadOnlyList<int> Layers => blocks.Select(b => b.LayerIndex).ToArray();

    /// <summary>How many tokens layer <paramref name="layer"/> sent to each expert.</summary>
    public IReadOnlyList<long> Usage(int layer) => usage[layer];

    /// <summary>The router probability (softmax over all experts) each expert received, summed over tokens, in layer <paramref name="layer"/>.</summary>
    public IReadOnlyList<double> ProbabilityMass(int layer) => probabilityMass[layer];

    /// <summary>Tokens routed by layer <paramref name="layer"/>.</summary>
    public long Tokens(int layer) => tokens[layer];

    /// <summary>Mean experts per token in layer <paramref name="layer"/> (0 before any token).</summary>
    public double MeanExpertsPerToken(int layer) => tokens[layer] == 0 ? 0 : (double)chosen[layer] / tokens[layer];

    /// <summary>Mean experts per token over all sparse layers (0 before any token).</summary>
    public double MeanExpertsPerToken()
    {
        long t = tokens.Values.Sum();
        return t == 0 ? 0 : (double)chosen.Values.Sum() / t;
    }

    /// <inheritdoc/>
    public void Observe(SparseMoeBlock block, Tensor routerLogits, Tensor selected, Tensor weights)
    {
        using var _ = NewDisposeScope();
        var perExpert = selected.sum(0, type: ScalarType.Int64).cpu().data<long>().ToArray();
        var mass = routerLogits.softmax(-1).sum(0, type: ScalarType.Float64).cpu().data<double>().ToArray();
        var u = usage[block.LayerIndex];
        var m = probabilityMass[block.LayerIndex];
        for (int e = 0; e < u.Length; e++) { u[e] += perExpert[e]; m[e] += mass[e]; }
        tokens[block.LayerIndex] += selected.shape[0];
        chosen[block.LayerIndex] += perExpert.Sum();
    }

    /// <summary>Detaches from the blocks (the counts stay readable).</summary>
    public void Dispose()
    {
        foreach (var b in blocks)
            if (ReferenceEquals(b.Observer, this)) b.Observer = null;
    }
}
