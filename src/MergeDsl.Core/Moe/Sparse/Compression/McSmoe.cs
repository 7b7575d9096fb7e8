using TorchSharp;
using static TorchSharp.torch;
using MergeDsl.Core.Models.Decoder;

namespace MergeDsl.Core.Moe.Sparse.Compression;

/// <summary>Settings of <see cref="McSmoe.Compress"/>.</summary>
public sealed record McSmoeOptions
{
    /// <summary>K: experts (groups) kept per sparse layer, 1..E.</summary>
    public int Experts { get; init; }
    /// <summary>Rank of the low-rank compression of every merged expert's matrices (null: no compression).</summary>
    public int? Rank { get; init; }
    /// <summary>Align neurons before merging (MC-SMoE does; false merges them as they are, for ablations).</summary>
    public bool Align { get; init; } = true;
    /// <summary>Largest intermediate size aligned exactly (see <see cref="LinearAssignment"/>).</summary>
    public int ExactAssignmentLimit { get; init; } = LinearAssignment.ExactLimit;

    /// <summary>Throws <see cref="ArgumentException"/> naming --experts or --rank when they do not fit <paramref name="numExperts"/>.</summary>
    public McSmoeOptions Validate(int numExperts)
    {
        if (Experts < 1 || Experts > numExperts) throw new ArgumentException($"--experts {Experts} is outside 1..{numExperts} (the model's experts per layer)");
        if (Rank is int r && r < 1) throw new ArgumentException($"--rank {r} must be at least 1");
        return this;
    }
}

/// <summary>What <see cref="McSmoe.Compress"/> did to one sparse layer.</summary>
/// <param name="Layer">The layer index.</param>
/// <param name="Usage">Usage frequency of each expert on the calibration tokens (top-k selections, sums to 1).</param>
/// <param name="Groups">Dominant experts and each expert's group.</param>
/// <param name="ExactAlignment">Whether every neuron alignment was solved exactly.</param>
public sealed record McSmoeLayer(int Layer, IReadOnlyList<double> Usage, ExpertGroups Groups, bool ExactAlignment);

/// <summary>The result of <see cref="McSmoe.Compress"/>.</summary>
/// <param name="Layers">Per sparse layer.</param>
/// <param name="ParametersBefore">The model's parameters before.</param>
/// <param name="ParametersAfter">Distinct parameters after: each merged expert counted once (the E router rows
/// still point at it), and at rank r each of its matrices counted as r·(m + n).</param>
/// <param name="CalibrationTokens">Tokens the statistics came from (per layer).</param>
public sealed record McSmoeReport(IReadOnlyList<McSmoeLayer> Layers, long ParametersBefore, long ParametersAfter, long CalibrationTokens);

/// <summary>
/// MC-SMoE ("Merge, Then Compress", Li et al., ICLR 2024) on a decoder's sparse blocks, in place:
/// per layer, (1) usage frequency and router-logit similarity from calibration logits, (2) the K most used
/// experts dominant, the others grouped to their most similar dominant expert (<see cref="ExpertGrouping"/>),
/// (3) each member's neurons aligned to its dominant expert and the group averaged by usage
/// (<see cref="FrequencyWeightedMerge"/>), (4) optionally every merged matrix truncated to rank r
/// (<see cref="LowRankCompression"/>). As in MC-SMoE's Mixtral code, the router keeps its E rows and every member
/// of a group then holds the merged expert: a token routed to two members of one group gets the merged expert
/// with their weights summed. Shared experts and attention are untouched.
/// </summary>
public static class McSmoe
{
    /// <summary>Compresses <paramref name="model"/> from the router logits of each sparse layer (see <see cref="RouterLogitRecorder"/>).</summary>
    /// <exception cref="ArgumentException">A dense model, options that do not fit, or a layer without logits.</exception>
    public static McSmoeReport Compress(DecoderModel model, Func<int, Tensor> routerLogits, McSmoeOptions options)
    {
        var blocks = SparseMoe.Blocks(model);
        if (blocks.Count == 0) throw new ArgumentException($"{model.Label}: {model.Config.Family.Architecture()} is a dense model; it has no experts to compress");
        foreach (var b in blocks) options.Validate(b.NumExperts);
        long before = model.ParameterCount, after = before, tokens = 0;
        var layers = new List<McSmoeLayer>();
        using var noGrad = no_grad();
        foreach (var block in blocks)
        {
            using var scope = NewDisposeScope();
            var logits = routerLogits(block.LayerIndex);
            tokens = logits.shape[0];
            var usage = ExpertGrouping.UsageFrequency(logits, Math.Min(block.Settings.ExpertsPerToken, block.NumExperts));
            var groups = ExpertGrouping.Group(usage, ExpertGrouping.RouterLogitSimilarity(logits), options.Experts);
            bool exact = true;
            var weights = block.Experts.Select(e => new ExpertWeights(e.Gate.Weight.detach().clone(), e.Up.Weight.detach().clone(), e.Down.Weight.detach().clone())).ToArray();
            long expertSize = LowRankCompression.ExpertSize(weights[0], null);
            for (int g = 0; g < groups.Count; g++)
            {
                var members = groups.Members(g);
                var (merged, ok) = FrequencyWeightedMerge.AlignAndMerge(members.Select(i => weights[i]).ToArray(),
                    members.Select(i => usage[i]).ToArray(), options.Align, options.ExactAssignmentLimit);
                exact &= ok;
                if (options.Rank is int r) merged = LowRankCompression.Compress(merged, r);
                foreach (var i in members)
                {
                    block.Experts[i].Gate.Weight.copy_(merged.Gate);
                    block.Experts[i].Up.Weight.copy_(merged.Up);
                    block.Experts[i].Down.Weight.copy_(merged.Down);
                }
                after -= members.Count * expertSize - LowRankCompression.ExpertSize(merged, options.Rank);
            }
            layers.Add(new McSmoeLayer(block.LayerIndex, usage, groups, exact));
        }
        return new McSmoeReport(layers, before, after, tokens);
    }
}
