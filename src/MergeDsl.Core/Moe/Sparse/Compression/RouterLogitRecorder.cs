using TorchSharp;
using static TorchSharp.torch;
using MergeDsl.Core.Models.Decoder;

namespace MergeDsl.Core.Moe.Sparse.Compression;

/// <summary>
/// Keeps a CPU copy of every router logit [tokens, experts] the sparse blocks of a model compute while it is
/// attached (construction to <see cref="Dispose"/>): the calibration statistics of MC-SMoE (usage frequency and
/// router-logit similarity both come from them).
/// </summary>
public sealed class RouterLogitRecorder : IRoutingObserver, IDisposable
{
    readonly IReadOnlyList<SparseMoeBlock> blocks;
    readonly Dictionary<int, List<Tensor>> logits = new();

    /// <summary>Attaches to every sparse block of <paramref name="model"/>.</summary>
    /// <exception cref="ArgumentException">The model has no sparse blocks.</exception>
    /// <exception cref="InvalidOperationException">A block already has an observer.</exception>
    public RouterLogitRecorder(DecoderModel model)
    {
        blocks = SparseMoe.Blocks(model);
        if (blocks.Count == 0) throw new ArgumentException($"{model.Label}: {model.Config.Family.Architecture()} is a dense model; it has no experts to compress");
        var busy = blocks.FirstOrDefault(b => b.Observer is not null);
        if (busy is not null) throw new InvalidOperationException($"{busy.FullName} already has a routing observer");
        foreach (var b in blocks) { logits[b.LayerIndex] = []; b.Observer = this; }
    }

    /// <inheritdoc/>
    public void Observe(SparseMoeBlock block, Tensor routerLogits, Tensor selected, Tensor weights)
        => logits[block.LayerIndex].Add(routerLogits.detach().cpu().clone().DetachFromDisposeScope());

    /// <summary>Every logit layer <paramref name="layer"/> computed, [tokens, experts] (a new tensor).</summary>
    /// <exception cref="InvalidOperationException">Nothing was run.</exception>
    public Tensor Logits(int layer)
    {
        var parts = logits[layer];
        if (parts.Count == 0) throw new InvalidOperationException($"layer {layer}: no tokens were routed while recording");
        return torch.cat(parts, 0);
    }

    /// <summary>Detaches from the blocks and frees the copies.</summary>
    public void Dispose()
    {
        foreach (var b in blocks)
            if (ReferenceEquals(b.Observer, this)) b.Observer = null;
        foreach (var t in logits.Values.SelectMany(l => l)) t.Dispose();
        logits.Clear();
    }
}
