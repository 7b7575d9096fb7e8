using TorchSharp;
using static TorchSharp.torch;

namespace MergeDsl.Core.TaskPool;

/// <summary>Accuracy of a functional model on a task's test split.</summary>
public static class PoolEvaluation
{
    /// <summary>
    /// Top-1 accuracy (percent) of <paramref name="embed"/> + the task head on U8 images / labels, in batches.
    /// </summary>
    public static double Accuracy(Func<Tensor, Tensor> embed, IReadOnlyDictionary<string, Tensor> head,
        Tensor imagesU8, Tensor labels, int batch = 500)
    {
        using var _ = no_grad();
        long n = imagesU8.shape[0], correct = 0;
        for (long s = 0; s < n; s += batch)
        {
            using var scope = NewDisposeScope();
            long e = Math.Min(n, s + batch);
            var x = TaskTensors.ToInput(imagesU8[TensorIndex.Slice(s, e)]);
            var pred = TinyClip.Head(head, embed(x)).argmax(1);
            correct += pred.eq(labels[TensorIndex.Slice(s, e)]).sum().item<long>();
        }
        return 100.0 * correct / n;
    }
}
