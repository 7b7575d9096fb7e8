using MergeDsl.Core.Models.Decoder;
using static TorchSharp.torch;

namespace MergeDsl.Bench.TextPool;

/// <summary>How well a byte-level model predicts a text.</summary>
/// <param name="BitsPerByte">−Σ log₂ p(byte | bytes before it in its window) / bytes predicted.</param>
/// <param name="Accuracy">Fraction of predicted bytes that are the model's most likely next byte.</param>
/// <param name="Bytes">Bytes predicted.</param>
public sealed record TextScore(double BitsPerByte, double Accuracy, long Bytes)
{
    /// <summary>
    /// Scores <paramref name="model"/> on <paramref name="text"/> cut into consecutive windows of
    /// <paramref name="context"/> + 1 bytes (<see cref="ByteWindows.Consecutive"/>), <paramref name="batch"/> windows per pass.
    /// </summary>
    public static TextScore Of(DecoderModel model, byte[] text, int context, int batch = 32)
    {
        double nll = 0;
        long correct = 0, count = 0;
        model.eval();
        using var _ = no_grad();
        // Windows of one length go through together; only the text's last window can be shorter.
        foreach (var group in ByteWindows.Consecutive(text, context).GroupBy(w => w.Length))
            foreach (var chunk in group.Chunk(batch))
            {
                using var scope = NewDisposeScope();
                int len = chunk[0].Length;
                var ids = tensor(chunk.SelectMany(w => w).ToArray(), [chunk.Length, len]);
                var inputs = ids.narrow(1, 0, len - 1);
                var targets = ids.narrow(1, 1, len - 1);
                var logp = model.Forward(inputs).log_softmax(-1);
                nll -= logp.gather(-1, targets.unsqueeze(-1)).sum().to_type(ScalarType.Float64).item<double>();
                correct += logp.argmax(-1).eq(targets).sum().item<long>();
                count += targets.numel();
            }
        if (count == 0) throw new ArgumentException($"a text of {text.Length} bytes has nothing to predict");
        return new TextScore(nll / Math.Log(2) / count, (double)correct / count, count);
    }
}
