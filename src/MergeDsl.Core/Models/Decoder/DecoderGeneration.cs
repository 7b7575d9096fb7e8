using TorchSharp;
using static TorchSharp.torch;
using MergeDsl.Core.Torch;

namespace MergeDsl.Core.Models.Decoder;

/// <summary>Greedy and sampled (temperature, top-k, seeded) generation, with or without a KV cache.</summary>
public static class DecoderGeneration
{
    /// <summary>Continues <paramref name="prompt"/> (at least one token) by up to <see cref="GenerationOptions.MaxNewTokens"/> tokens.</summary>
    /// <exception cref="ArgumentException">Bad options, an empty prompt, or a total length the model cannot take.</exception>
    public static GenerationResult Generate(DecoderModel model, IReadOnlyList<int> prompt, GenerationOptions options)
    {
        options.Validate();
        if (prompt.Count == 0) throw new ArgumentException("the prompt is empty; generation needs at least one token (e.g. BOS)");
        model.CheckLength(prompt.Count + options.MaxNewTokens);
        using var generator = new Generator((ulong)options.Seed);
        using var noGrad = no_grad();
        var tokens = new List<int>(prompt);
        var added = new List<int>();
        var stepLogits = options.KeepLogits ? new List<float[]>() : null;
        using var cache = options.UseCache ? new KvCache(model.Config, 1, prompt.Count + Math.Max(1, options.MaxNewTokens)) : null;
        for (int step = 0; step < options.MaxNewTokens; step++)
        {
            using var scope = NewDisposeScope();
            var feed = cache is null || step == 0 ? tokens : tokens.Skip(tokens.Count - 1).ToList();
            var ids = torch.tensor(feed.Select(i => (long)i).ToArray(), [1, feed.Count]);
            var last = model.Forward(ids, cache).select(0, 0).select(0, feed.Count - 1);    // [V]
            stepLogits?.Add(last.to_type(ScalarType.Float32).data<float>().ToArray());
            int next = Pick(last, options, generator);
            tokens.Add(next);
            added.Add(next);
            if (options.StopAtEos == next) break;
        }
        return new GenerationResult(added, stepLogits);
    }

    static int Pick(Tensor logits, GenerationOptions options, Generator generator)
    {
        if (options.Temperature == 0) return (int)logits.argmax().item<long>();
        var scaled = logits.to_type(ScalarType.Float64).Over(options.Temperature);
        if (options.TopK > 0 && options.TopK < scaled.shape[0])
        {
            var (values, _) = scaled.topk(options.TopK);
            var threshold = values[options.TopK - 1];
            using var minusInfinity = double.NegativeInfinity.ToScalar();
            scaled = scaled.masked_fill(scaled.lt(threshold), minusInfinity);
        }
        var probs = scaled.softmax(0);
        return (int)torch.multinomial(probs, 1, false, generator).item<long>();
    }
}
