using static TorchSharp.torch;

namespace MergeDsl.Core.Moe.Sparse;

/// <summary>Receives every routing decision of the sparse blocks it is attached to (see <see cref="SparseMoeBlock.Observer"/>).</summary>
public interface IRoutingObserver
{
    /// <summary>
    /// Called once per forward pass of <paramref name="block"/> with the router logits [tokens, experts] (float32), which
    /// experts each token was sent to (<paramref name="selected"/>, bool [tokens, experts]) and the combination weights
    /// [tokens, experts] (float32, zero off the selection). The tensors belong to the forward pass: copy what must
    /// outlive the call.
    /// </summary>
    void Observe(SparseMoeBlock block, Tensor routerLogits, Tensor selected, Tensor weights);
}
