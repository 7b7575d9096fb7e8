using MergeDsl.Core.Models.Decoder;
using TorchSharp;
using static TorchSharp.torch;

namespace MergeDsl.Core.Adaptation;

/// <summary>How well a language model predicts one task's text.</summary>
/// <param name="Task">Task (file) name.</param>
/// <param name="BitsPerByte">−Σ log₂ p over the predicted tokens / UTF-8 bytes of the whole text.</param>
/// <param name="MeanLogLikelihood">Mean natural-log likelihood per predicted token.</param>
/// <param name="Accuracy">Fraction of predicted tokens that are the model's most likely next token.</param>
/// <param name="Tokens">Tokens predicted (every token after the text's first).</param>
/// <param name="Bytes">UTF-8 bytes of the text.</param>
public sealed record TextTaskScore(string Task, double BitsPerByte, double MeanLogLikelihood, double Accuracy, long Tokens, long Bytes);

/// <summary>
/// Scores a decoder (plain or upscaled) on per-task texts: each text is cut into consecutive windows of at most
/// <c>max_position_embeddings</c> + 1 tokens that overlap by one token (the model reads at most
/// <c>max_position_embeddings</c>), so every token after the text's first is predicted exactly once, from the tokens
/// before it in its window.
/// </summary>
public static class TextEvaluation
{
    /// <summary>The windows of <paramref name="tokens"/>, each at most <paramref name="length"/> (≥ 2) tokens.</summary>
    /// <remarks>A list, not an iterator: the compiler's state-machine attribute on iterators breaks the API-docs build.</remarks>
    public static IReadOnlyList<long[]> Windows(IReadOnlyList<int> tokens, int length)
    {
        if (length < 2) throw new ArgumentException($"window length must be at least 2, got {length}");
        var windows = new List<long[]>();
        for (int start = 0; start + 1 < tokens.Count; start += length - 1)
        {
            int len = Math.Min(length, tokens.Count - start);
            var w = new long[len];
            for (int t = 0; t < len; t++) w[t] = tokens[start + t];
            windows.Add(w);
        }
        return windows;
    }

    /// <summary>Scores <paramref name="model"/> on <paramref name="data"/>, <paramref name="batch"/> windows per pass.</summary>
    /// <exception cref="ArgumentException">A text of fewer than two tokens (nothing to predict), naming its source.</exception>
    public static TextTaskScore Score(DecoderModel model, TextTaskData data, int batch = 16)
    {
        if (batch <= 0) throw new ArgumentException($"batch must be positive, got {batch}");
        if (data.Tokens.Count < 2) throw new ArgumentException($"{data.Source}: {data.Tokens.Count} token(s); at least two are needed to predict one");
        double nll = 0;
        long correct = 0, count = 0;
        model.eval();
        using var _ = no_grad();
        foreach (var group in Windows(data.Tokens, model.Config.MaxPositionEmbeddings + 1).GroupBy(w => w.Length))
            foreach (var chunk in group.Chunk(batch))
            {
                using var scope = NewDisposeScope();
                int len = chunk[0].Length;
                var ids = tensor(chunk.SelectMany(w => w).ToArray(), [chunk.Length, len]);
                var targets = ids.narrow(1, 1, len - 1);
                var logp = model.Forward(ids.narrow(1, 0, len - 1)).log_softmax(-1);
                nll -= logp.gather(-1, targets.unsqueeze(-1)).sum().to_type(ScalarType.Float64).item<double>();
                correct += logp.argmax(-1).eq(targets).sum().item<long>();
                count += targets.numel();
            }
        return new TextTaskScore(data.Task, nll / Math.Log(2) / data.Bytes, -nll / count, (double)correct / count, count, data.Bytes);
    }
}
