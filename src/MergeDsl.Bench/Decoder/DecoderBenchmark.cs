using System.Diagnostics;
using MergeDsl.Core.Memory;
using MergeDsl.Core.Models.Decoder;
using MergeDsl.Core.Models.Decoder.Tokenizers;
using static TorchSharp.torch;

namespace MergeDsl.Bench.Decoder;

/// <summary>One model size the decoder benchmark measures.</summary>
public sealed record DecoderBenchShape(string Name, DecoderConfig Config)
{
    /// <summary>A 2-layer model over the byte vocabulary (~0.2M parameters).</summary>
    public static DecoderBenchShape Tiny { get; } = new("tiny", new DecoderConfig
    {
        Family = DecoderFamily.Llama, VocabSize = ByteTokenizer.VocabSize, HiddenSize = 64, IntermediateSize = 172,
        NumHiddenLayers = 2, NumAttentionHeads = 4, NumKeyValueHeads = 2, HeadDim = 16, MaxPositionEmbeddings = 2048,
    });

    /// <summary>A Llama shape of ~100M parameters: 12 layers × 768, 12 query / 4 key-value heads, MLP 2048, vocab 16000, untied.</summary>
    public static DecoderBenchShape Llama100M { get; } = new("llama-100m", new DecoderConfig
    {
        Family = DecoderFamily.Llama, VocabSize = 16000, HiddenSize = 768, IntermediateSize = 2048,
        NumHiddenLayers = 12, NumAttentionHeads = 12, NumKeyValueHeads = 4, HeadDim = 64, MaxPositionEmbeddings = 2048,
    });
}

/// <summary>What <see cref="DecoderBenchmark.Run"/> measured for one shape.</summary>
/// <param name="Shape">Shape name.</param>
/// <param name="Parameters">Parameter count.</param>
/// <param name="LoadSeconds">Reading the folder written to disk into the runtime.</param>
/// <param name="ScoreTokensPerSecond">Tokens scored per second (batches of <paramref name="ScoreBatch"/> × <paramref name="ScoreLength"/>).</param>
/// <param name="ScoreBatch">Sequences per scoring batch.</param>
/// <param name="ScoreLength">Tokens per scored sequence.</param>
/// <param name="Generation">New tokens → tokens per second, greedy, with the KV cache.</param>
/// <param name="NoCacheTokensPerSecond">Tokens per second of the shortest generation without the cache (full recomputation).</param>
/// <param name="PeakResidentBytes">The process's peak resident set after this shape (VmHWM).</param>
public sealed record DecoderBenchResult(string Shape, long Parameters, double LoadSeconds, double ScoreTokensPerSecond,
    int ScoreBatch, int ScoreLength, IReadOnlyList<(int NewTokens, double TokensPerSecond)> Generation,
    double NoCacheTokensPerSecond, long PeakResidentBytes);

/// <summary>
/// Speed of the decoder runtime on random weights written to a temporary folder and read back through the
/// checkpoint loader: scoring throughput, and generation throughput with the KV cache at several lengths
/// (flat when each new token costs one pass over one position) against full recomputation.
/// </summary>
public static class DecoderBenchmark
{
    /// <summary>Measures <paramref name="shape"/> in <paramref name="workDir"/> (a fresh subfolder, deleted afterwards).</summary>
    public static DecoderBenchResult Run(DecoderBenchShape shape, string workDir, IReadOnlyList<int> generationLengths,
        int scoreBatch = 4, int scoreLength = 512, int prompt = 16, Action<string>? log = null)
    {
        string folder = Path.Combine(workDir, $"decoder-{shape.Name}-{Guid.NewGuid():N}");
        try
        {
            using (var written = DecoderModelFolder.Random(shape.Config, seed: 1))
                DecoderModelFolder.Save(folder, written, DecoderModelFolder.ByteTokenizerFiles());
            var sw = Stopwatch.StartNew();
            using var model = DecoderModelFolder.Load(folder);
            double load = sw.Elapsed.TotalSeconds;
            log?.Invoke($"{shape.Name}: {model.ParameterCount:N0} parameters, loaded in {load:F2} s");

            var rng = new Random(7);
            var seqs = Enumerable.Range(0, scoreBatch)
                .Select(_ => (IReadOnlyList<int>)Enumerable.Range(0, scoreLength).Select(_ => rng.Next(shape.Config.VocabSize)).ToArray()).ToList();
            DecoderScoring.Score(model, seqs.Take(1).Select(s => (IReadOnlyList<int>)s.Take(32).ToArray()).ToList());   // warm-up
            sw.Restart();
            DecoderScoring.Score(model, seqs, scoreBatch);
            double scoreRate = scoreBatch * (double)scoreLength / sw.Elapsed.TotalSeconds;
            log?.Invoke($"{shape.Name}: scoring {scoreRate:F0} tokens/s");

            var promptIds = Enumerable.Range(0, prompt).Select(_ => rng.Next(shape.Config.VocabSize)).ToArray();
            DecoderGeneration.Generate(model, promptIds, new GenerationOptions { MaxNewTokens = 4 });   // warm-up
            var gen = new List<(int, double)>();
            foreach (int n in generationLengths)
            {
                sw.Restart();
                var r = DecoderGeneration.Generate(model, promptIds, new GenerationOptions { MaxNewTokens = n });
                double rate = r.Tokens.Count / sw.Elapsed.TotalSeconds;
                gen.Add((n, rate));
                log?.Invoke($"{shape.Name}: generating {n} tokens with the KV cache: {rate:F1} tokens/s");
            }
            int shortest = generationLengths.Min();
            sw.Restart();
            var full = DecoderGeneration.Generate(model, promptIds, new GenerationOptions { MaxNewTokens = shortest, UseCache = false });
            double noCache = full.Tokens.Count / sw.Elapsed.TotalSeconds;
            log?.Invoke($"{shape.Name}: generating {shortest} tokens without the cache: {noCache:F1} tokens/s");
            return new DecoderBenchResult(shape.Name, model.ParameterCount, load, scoreRate, scoreBatch, scoreLength, gen, noCache,
                PeakMemory.PeakResidentBytes());
        }
        finally
        {
            if (Directory.Exists(folder)) Directory.Delete(folder, true);
        }
    }
}
