using TorchSharp;
using static TorchSharp.torch;

namespace MergeDsl.Core.Models.Decoder;

/// <summary>
/// Per-token log-likelihoods of token sequences, scored in batches. Sequences of different lengths are
/// padded on the right: attention is causal, so padding after a token never changes what the model
/// predicts at it, and padded positions are left out of the scores.
/// </summary>
public static class DecoderScoring
{
    /// <summary>
    /// Scores every sequence (each needs at least one token), <paramref name="batchSize"/> at a time.
    /// </summary>
    /// <exception cref="ArgumentException">An empty sequence, a bad id, or one longer than the model allows.</exception>
    public static IReadOnlyList<SequenceScore> Score(DecoderModel model, IReadOnlyList<IReadOnlyList<int>> sequences, int batchSize = 8)
    {
        if (batchSize <= 0) throw new ArgumentException($"batch size must be positive, got {batchSize}");
        for (int i = 0; i < sequences.Count; i++)
        {
            if (sequences[i].Count == 0) throw new ArgumentException($"sequence {i} is empty; scoring needs at least one token");
            model.CheckLength(sequences[i].Count);
        }
        var results = new SequenceScore[sequences.Count];
        for (int from = 0; from < sequences.Count; from += batchSize)
        {
            int n = Math.Min(batchSize, sequences.Count - from);
            var batch = Enumerable.Range(from, n).Select(i => sequences[i]).ToList();
            var scores = ScoreBatch(model, batch);
            for (int j = 0; j < n; j++) results[from + j] = scores[j];
        }
        return results;
    }

    static SequenceScore[] ScoreBatch(DecoderModel model, IReadOnlyList<IReadOnlyList<int>> batch)
    {
        using var _ = NewDisposeScope();
        using var __ = no_grad();
        int longest = batch.Max(s => s.Count);
        if (longest == 1) return batch.Select(_ => new SequenceScore([])).ToArray();   // nothing to predict
        var flat = new long[batch.Count * longest];   // padding id 0: any valid id will do, it is never scored
        for (int b = 0; b < batch.Count; b++)
            for (int t = 0; t < batch[b].Count; t++) flat[b * longest + t] = batch[b][t];
        var ids = torch.tensor(flat, [batch.Count, longest]);
        var logits = model.Forward(ids);                                  // [B, T, V]
        var logProbs = logits.narrow(1, 0, longest - 1).log_softmax(-1);  // predictions for tokens 1..T-1
        var targets = ids.narrow(1, 1, longest - 1).unsqueeze(-1);
        var picked = logProbs.gather(-1, targets).squeeze(-1).to_type(ScalarType.Float64);  // [B, T-1]
        var values = picked.contiguous().data<double>().ToArray();
        var scores = new SequenceScore[batch.Count];
        for (int b = 0; b < batch.Count; b++)
        {
            int predicted = batch[b].Count - 1;
            scores[b] = new SequenceScore(values.Skip(b * (longest - 1)).Take(predicted).ToArray());
        }
        return scores;
    }
}
