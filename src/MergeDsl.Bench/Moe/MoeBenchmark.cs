using System.Diagnostics;
using MergeDsl.Core.Memory;
using MergeDsl.Core.Models.Decoder;
using MergeDsl.Core.Models.Decoder.Tokenizers;
using MergeDsl.Core.Moe.Sparse;
using static TorchSharp.torch;

namespace MergeDsl.Bench.Moe;

/// <summary>One model the sparse-MoE benchmark measures.</summary>
/// <param name="Name">Shape name on the command line.</param>
/// <param name="Config">A Mixtral configuration (8 experts, top-2).</param>
/// <param name="BlockTokens">Tokens fed to one sparse block per timed pass.</param>
/// <param name="ScoreBatch">Sequences per model-level scoring pass.</param>
/// <param name="ScoreLength">Tokens per scored sequence.</param>
public sealed record MoeBenchShape(string Name, DecoderConfig Config, int BlockTokens, int ScoreBatch, int ScoreLength)
{
    static DecoderConfig Mixtral(int vocab, int hidden, int layers, int heads, int kvHeads, int expertWidth, int context) => new()
    {
        Family = DecoderFamily.Mixtral, VocabSize = vocab, HiddenSize = hidden, IntermediateSize = expertWidth,
        NumHiddenLayers = layers, NumAttentionHeads = heads, NumKeyValueHeads = kvHeads, HeadDim = hidden / heads,
        MaxPositionEmbeddings = context, RmsNormEps = 1e-5, RopeTheta = 1e6,
        Moe = new SparseMoeConfig { Style = SparseMoeStyle.Mixtral, NumExperts = 8, ExpertsPerToken = 2, ExpertIntermediateSize = expertWidth },
    };

    /// <summary>The text pool's model upcycled to 8 experts: byte vocabulary, width 64, 3 layers, 4 heads, expert width 176 (~0.9M parameters).</summary>
    public static MoeBenchShape TextPool { get; } = new("textpool", Mixtral(ByteTokenizer.VocabSize, 64, 3, 4, 4, 176, 128), 4096, 8, 128);

    /// <summary>A Mixtral shape of ~200M parameters: vocab 32000 (untied), hidden 512, 8 layers, 8 query / 4 key-value heads,
    /// 8 experts of width 1664.</summary>
    public static MoeBenchShape Mixtral200M { get; } = new("mixtral-200m", Mixtral(32000, 512, 8, 8, 4, 1664, 1024), 1024, 2, 256);

    /// <summary>A 1-layer shape for smoke tests (hidden 16, 8 experts of width 8).</summary>
    public static MoeBenchShape Smoke { get; } = new("smoke", Mixtral(ByteTokenizer.VocabSize, 16, 1, 2, 2, 8, 64), 64, 2, 16);
}

/// <summary>One routing variant's measured speed.</summary>
/// <param name="Variant">The routing (<c>top-1</c>, <c>top-2</c>, <c>top-p:P</c>), or <c>dense</c> (all 8 experts on every token, top-2 weights).</param>
/// <param name="ExpertsPerToken">Mean experts each token was sent to (8 for dense: every expert runs).</param>
/// <param name="BlockTokensPerSecond">Tokens per second through one sparse block (fastest run).</param>
/// <param name="ModelTokensPerSecond">Tokens per second scoring with the whole model (fastest run).</param>
public sealed record MoeBenchRow(string Variant, double ExpertsPerToken, double BlockTokensPerSecond, double ModelTokensPerSecond);

/// <summary>What <see cref="MoeBenchmark.Run"/> measured for one shape.</summary>
/// <param name="Shape">Shape name.</param>
/// <param name="Parameters">Parameter count.</param>
/// <param name="RouterStd">Standard deviation of the router weights (see <see cref="MoeBenchmark"/>).</param>
/// <param name="Rows">One row per routing variant, dense last.</param>
/// <param name="Runs">Timed runs per variant of the block (the fastest is reported).</param>
/// <param name="PeakResidentBytes">The process's peak resident set after this shape (VmHWM).</param>
public sealed record MoeBenchResult(string Shape, long Parameters, double RouterStd, IReadOnlyList<MoeBenchRow> Rows, int Runs, long PeakResidentBytes);

/// <summary>
/// Speed of the sparse MoE block's grouped dispatch at top-1, top-2 and top-p against running every expert on every
/// token (<see cref="SparseMoeBlock.DenseReference"/>), on random Mixtral-shaped weights. Router weights are drawn with
/// standard deviation 1/√hidden × 2, so router logits of RMS-normed inputs spread with a standard deviation of about 2
/// (the default 0.02 would make every router nearly uniform and top-p would always take most experts). The variants are
/// interleaved within each run so that load from other jobs on the machine falls on all of them alike, and the fastest
/// run of each is reported: on a shared machine other jobs only ever slow a run down, so the fastest is the least
/// disturbed.
/// </summary>
public static class MoeBenchmark
{
    /// <summary>The top-p thresholds measured.</summary>
    public static readonly IReadOnlyList<double> TopPs = [0.5, 0.8];

    /// <summary>Measures <paramref name="shape"/> with <paramref name="runs"/> timed runs per variant.</summary>
    public static MoeBenchResult Run(MoeBenchShape shape, int runs = 5, int modelRuns = 2, Action<string>? log = null)
    {
        using var model = DecoderModelFolder.Random(shape.Config, seed: 1);
        double routerStd = 2.0 / Math.Sqrt(shape.Config.HiddenSize);
        var blocks = SparseMoe.Blocks(model);
        using (no_grad())
        using (var gen = new Generator(2))
            foreach (var b in blocks) b.RouterWeight.copy_(randn(b.RouterWeight.shape, generator: gen).mul_(routerStd));
        log?.Invoke($"{shape.Name}: {model.ParameterCount:N0} parameters, {blocks.Count} sparse layers of {blocks[0].NumExperts} experts");

        var variants = new List<(string Name, RoutingPolicy Policy, bool Dense)>
        {
            ("top-1", new TopK(1), false),
            ("top-2", new TopK(2), false),
        };
        variants.AddRange(TopPs.Select(p => ($"top-p:{p}", (RoutingPolicy)new TopP(p), false)));
        variants.Add(("dense", new TopK(2), true));

        // Block input: RMS-normed random hidden states, as the block sees after post_attention_layernorm.
        using var gen2 = new Generator(3);
        using var x = randn([shape.BlockTokens, shape.Config.HiddenSize], generator: gen2);
        var block = blocks[0];
        var rng = new Random(7);
        var seqs = Enumerable.Range(0, shape.ScoreBatch)
            .Select(_ => (IReadOnlyList<int>)Enumerable.Range(0, shape.ScoreLength).Select(_ => rng.Next(shape.Config.VocabSize)).ToArray()).ToList();

        var blockTimes = variants.Select(_ => new List<double>()).ToArray();
        var modelTimes = variants.Select(_ => new List<double>()).ToArray();
        var perToken = new double[variants.Count];
        void Use(int v)
        {
            foreach (var b in blocks) { b.Routing = variants[v].Policy; b.DenseReference = variants[v].Dense; }
        }
        for (int v = 0; v < variants.Count; v++)
        {
            Use(v);
            using var stats = new RoutingStatistics(model);
            using (no_grad()) using (NewDisposeScope()) block.forward(x);   // warm-up, and experts per token of the block input
            perToken[v] = variants[v].Dense ? block.NumExperts : stats.MeanExpertsPerToken();
        }
        for (int r = 0; r < Math.Max(runs, modelRuns); r++)
            for (int v = 0; v < variants.Count; v++)
            {
                Use(v);
                if (r < runs)
                {
                    using var _ = no_grad();
                    using var scope = NewDisposeScope();
                    var sw = Stopwatch.StartNew();
                    block.forward(x);
                    blockTimes[v].Add(sw.Elapsed.TotalSeconds);
                }
                if (r < modelRuns)
                {
                    var sw = Stopwatch.StartNew();
                    DecoderScoring.Score(model, seqs, shape.ScoreBatch);
                    modelTimes[v].Add(sw.Elapsed.TotalSeconds);
                }
            }
        foreach (var b in blocks) { b.DenseReference = false; b.Routing = b.Settings.DefaultRouting; }

        var rows = new List<MoeBenchRow>();
        for (int v = 0; v < variants.Count; v++)
        {
            var row = new MoeBenchRow(variants[v].Name, perToken[v], shape.BlockTokens / blockTimes[v].Min(),
                shape.ScoreBatch * (double)shape.ScoreLength / modelTimes[v].Min());
            rows.Add(row);
            log?.Invoke($"{shape.Name} {row.Variant}: {row.ExpertsPerToken:F2} experts/token, block {row.BlockTokensPerSecond:F0} tok/s, model {row.ModelTokensPerSecond:F0} tok/s");
        }
        return new MoeBenchResult(shape.Name, model.ParameterCount, routerStd, rows, runs, PeakMemory.PeakResidentBytes());
    }
}
