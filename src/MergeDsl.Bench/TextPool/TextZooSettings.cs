using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using MergeDsl.Bench.Data;
using MergeDsl.Core.Models.Decoder;
using MergeDsl.Core.Models.Decoder.Tokenizers;

namespace MergeDsl.Bench.TextPool;

/// <summary>
/// Everything that determines the text pool's model zoo: the tiny byte-level Llama's shape, pretraining and
/// fine-tuning, and which held-in domains get an expert. Its hash, with the hash of the data, names the zoo's
/// cache folder. Width, layer count, expert count and pretraining steps are settings so that the scale study
/// (widths, 2-8 experts, weak and strong bases) reuses this zoo builder.
/// </summary>
public sealed record TextZooSettings
{
    /// <summary>Seed of initialisation and batch sampling.</summary>
    public int Seed { get; init; } = 42;
    /// <summary>Residual width (<c>hidden_size</c>).</summary>
    public int Width { get; init; } = 64;
    /// <summary>Decoder layers.</summary>
    public int Layers { get; init; } = 3;
    /// <summary>Attention heads (key/value heads alike: plain multi-head attention).</summary>
    public int Heads { get; init; } = 4;
    /// <summary>SwiGLU width; 0 means Llama's ≈ 8/3 × width, rounded up to a multiple of 16.</summary>
    public int MlpWidth { get; init; }
    /// <summary>Context in bytes (training windows and evaluation windows; <c>max_position_embeddings</c>).</summary>
    public int Context { get; init; } = 128;
    /// <summary>Generic pretraining steps on the mix of every held-in domain's training text.</summary>
    public int PretrainSteps { get; init; } = 500;
    /// <summary>Windows per pretraining step.</summary>
    public int PretrainBatch { get; init; } = 16;
    /// <summary>Peak pretraining learning rate (AdamW, warm-up then cosine).</summary>
    public double PretrainLr { get; init; } = 3e-3;
    /// <summary>Fine-tuning steps per expert (all parameters move).</summary>
    public int FineTuneSteps { get; init; } = 120;
    /// <summary>Windows per fine-tuning step.</summary>
    public int FineTuneBatch { get; init; } = 16;
    /// <summary>Peak fine-tuning learning rate (AdamW, warm-up then cosine).</summary>
    public double FineTuneLr { get; init; } = 1e-3;
    /// <summary>Held-in domains, one expert each, in table order.</summary>
    public IReadOnlyList<string> Experts { get; init; } = TextDomains.All.Where(d => !d.HeldOut).Select(d => d.Name).ToList();
    /// <summary>Split sizes (the data the zoo trains on).</summary>
    public TextSplitSizes Sizes { get; init; } = new();

    /// <summary>The model's configuration: a Llama with the byte vocabulary (256 bytes, BOS, EOS), untied head.</summary>
    public DecoderConfig ModelConfig() => new DecoderConfig
    {
        Family = DecoderFamily.Llama, VocabSize = ByteTokenizer.VocabSize, HiddenSize = Width,
        IntermediateSize = MlpWidth > 0 ? MlpWidth : (8 * Width / 3 + 15) / 16 * 16,
        NumHiddenLayers = Layers, NumAttentionHeads = Heads, NumKeyValueHeads = Heads, HeadDim = Width / Heads,
        MaxPositionEmbeddings = Context, RmsNormEps = 1e-5, RopeTheta = 10000.0, TieWordEmbeddings = false,
        BosTokenId = ByteTokenizer.Bos, EosTokenId = ByteTokenizer.Eos,
    }.Validate();

    /// <summary>Refuses settings that cannot train (one line naming the setting).</summary>
    public TextZooSettings Validate()
    {
        if (Width <= 0 || Heads <= 0 || Width % Heads != 0 || Width / Heads % 2 != 0)
            throw new ArgumentException($"width {Width} must be a positive multiple of heads {Heads} with an even head width");
        if (Layers <= 0) throw new ArgumentException($"layers must be positive, got {Layers}");
        if (Context < 8) throw new ArgumentException($"context must be at least 8 bytes, got {Context}");
        if (PretrainSteps < 0 || FineTuneSteps < 0) throw new ArgumentException("training steps must be ≥ 0");
        if (PretrainBatch <= 0 || FineTuneBatch <= 0) throw new ArgumentException("batch sizes must be positive");
        if (Experts.Count < 1) throw new ArgumentException("the zoo needs at least one expert domain");
        foreach (var e in Experts)
            if (TextDomains.ByName(e).HeldOut) throw new ArgumentException($"domain '{e}' is held out: it gets no expert");
        if (Experts.Distinct().Count() != Experts.Count) throw new ArgumentException("expert domains repeat");
        ModelConfig();
        return this;
    }

    /// <summary>Short stable hash of the settings and of the data they train on (names the cache folder).</summary>
    public string Hash(IEnumerable<TextSplitInfo> data)
    {
        var json = JsonSerializer.Serialize(this) + JsonSerializer.Serialize(data.Select(d => new { d.Domain, d.Sha256 }));
        return Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes(json)))[..12].ToLowerInvariant();
    }
}
