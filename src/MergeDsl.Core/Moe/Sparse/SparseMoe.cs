using MergeDsl.Core.Models.Decoder;

namespace MergeDsl.Core.Moe.Sparse;

/// <summary>Model-wide operations on the sparse MoE blocks of a decoder.</summary>
public static class SparseMoe
{
    /// <summary>The sparse blocks of <paramref name="model"/>, in layer order (empty for a dense model).</summary>
    public static IReadOnlyList<SparseMoeBlock> Blocks(DecoderModel model)
        => model.Layers.Select(l => l.Mlp).OfType<SparseMoeBlock>().ToArray();

    /// <summary>
    /// Routes every sparse block of <paramref name="model"/> with <paramref name="policy"/>, or, when null, with the
    /// model's own policy (<see cref="SparseMoeConfig.DefaultRouting"/>).
    /// </summary>
    /// <exception cref="ArgumentException">The model has no sparse blocks, or the policy does not fit its expert count (nothing is changed then).</exception>
    public static void SetRouting(DecoderModel model, RoutingPolicy? policy)
    {
        var blocks = Blocks(model);
        if (blocks.Count == 0)
            throw new ArgumentException($"{model.Label}: {model.Config.Family.Architecture()} has no sparse MoE blocks to route");
        foreach (var b in blocks) (policy ?? b.Settings.DefaultRouting).Validate(b.NumExperts);
        foreach (var b in blocks) b.Routing = policy ?? b.Settings.DefaultRouting;
    }

    /// <summary>Routed plus shared parameters a token touches in one sparse block at most (<paramref name="perToken"/> routed experts).</summary>
    public static long ActiveParametersPerToken(SparseMoeBlock block, double perToken)
    {
        long expert = block.Experts[0].parameters().Sum(p => p.numel());
        long always = block.RouterWeight.numel()
                      + (block.SharedExpert?.parameters().Sum(p => p.numel()) ?? 0)
                      + (block.SharedExpertGate?.parameters().Sum(p => p.numel()) ?? 0);
        return always + (long)Math.Round(expert * perToken);
    }
}
