using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using MergeDsl.Core.Torch;

namespace MergeDsl.Core.Models.Decoder;

/// <summary>
/// HF <c>LlamaForCausalLM</c> / <c>MistralForCausalLM</c> / <c>Qwen2ForCausalLM</c> with Hugging Face parameter
/// names (<c>model.embed_tokens.weight</c>, <c>model.layers.N.self_attn.q_proj.weight</c>, …, <c>model.norm.weight</c>,
/// <c>lm_head.weight</c> unless <c>tie_word_embeddings</c>), so state dicts round-trip with real checkpoints.
/// Computes in the parameters' dtype (float32 unless converted); <see cref="Forward"/> gives logits.
/// </summary>
public sealed class DecoderModel : nn.Module
{
    readonly Body body;
    readonly ClipLinear? lmHead;
    readonly RotaryEmbedding rope;

    /// <summary>The configuration it was built from.</summary>
    public DecoderConfig Config { get; }

    /// <summary>Where the model came from (its config.json, or a name), the subject of error messages.</summary>
    public string Label { get; }

    /// <summary>The decoder layers in order.</summary>
    public IReadOnlyList<DecoderLayer> Layers => body.Layers;

    /// <summary>
    /// Builds a randomly initialised model (weights N(0, 0.02²), norms 1). <paramref name="mlpFactory"/> chooses
    /// each layer's feed-forward block (default: the dense SwiGLU MLP). <paramref name="extraModules"/> are
    /// registered at the top level under their keys (e.g. an MoE's router shared by every layer, <c>shared_router.*</c>).
    /// Default: <see cref="DecoderMlps.FromConfig"/> (sparse MoE blocks where a Mixtral/Qwen2-MoE/DeepSeek config asks).
    /// </summary>
    public DecoderModel(DecoderConfig config, string label = "decoder", DecoderMlpFactory? mlpFactory = null,
        IReadOnlyDictionary<string, nn.Module>? extraModules = null)
        : base(config.Family.Architecture())
    {
        Torch.TorchRuntime.EnsureLoadable();
        Config = config.Validate();
        Label = label;
        body = new Body("model", config, mlpFactory ?? DecoderMlps.FromConfig);
        register_module("model", body);
        if (!config.TieWordEmbeddings)
        {
            lmHead = new ClipLinear("lm_head", config.HiddenSize, config.VocabSize, bias: false);
            register_module("lm_head", lmHead);
        }
        if (extraModules is not null)
            foreach (var (name, module) in extraModules) register_module(name, module);
        rope = RotaryEmbedding.FromConfig(config);
    }

    /// <summary>
    /// Logits [B, T, vocab] for token ids <paramref name="ids"/> [B, T] (int64). With a cache, the tokens
    /// continue the cached ones (positions cache.Length onwards) and their keys and values are added to it.
    /// </summary>
    /// <exception cref="ArgumentException">An id outside the vocabulary, or a sequence longer than the model allows.</exception>
    public Tensor Forward(Tensor ids, KvCache? cache = null) => Logits(Hidden(ids, cache));

    /// <summary>The final hidden states [B, T, hidden] (after <c>model.norm</c>).</summary>
    public Tensor Hidden(Tensor ids, KvCache? cache = null)
    {
        if (ids.dim() != 2) throw new ArgumentException($"{Label}: token ids must be [batch, tokens], got [{string.Join(", ", ids.shape)}]");
        if (ids.dtype != ScalarType.Int64) ids = ids.to_type(ScalarType.Int64);
        long start = cache?.Length ?? 0;
        long t = ids.shape[1];
        if (cache is not null && cache.Batch != ids.shape[0])
            throw new ArgumentException($"{Label}: the KV cache holds {cache.Batch} sequences, {ids.shape[0]} were given");
        CheckLength(start + t);
        if (ids.numel() > 0)
        {
            long lo = ids.min().item<long>(), hi = ids.max().item<long>();
            if (lo < 0 || hi >= Config.VocabSize)
                throw new ArgumentException($"{Label}: token id {(lo < 0 ? lo : hi)} is outside the vocabulary (vocab_size {Config.VocabSize})");
        }
        var h = body.Forward(ids, start, rope, cache);
        cache?.Advance(t);
        return h;
    }

    /// <summary>The LM head over hidden states: [.., hidden] → [.., vocab].</summary>
    public Tensor Logits(Tensor hidden) => lmHead is not null ? lmHead.forward(hidden) : nn.functional.linear(hidden, body.EmbedWeight);

    /// <summary>Refuses a sequence of <paramref name="length"/> tokens the configuration cannot handle.</summary>
    public void CheckLength(long length)
    {
        if (length > Config.MaxPositionEmbeddings)
            throw new ArgumentException($"{Label}: a sequence of {length} tokens is longer than max_position_embeddings {Config.MaxPositionEmbeddings}");
        if (Config.SlidingWindow is int w && length > w)
            throw new ArgumentException($"{Label}: a sequence of {length} tokens is longer than sliding_window {w}, and sliding-window attention is not implemented");
    }

    /// <summary>Parameters by full name (the state dict).</summary>
    public IReadOnlyDictionary<string, Parameter> ParametersByName()
        => named_parameters().ToDictionary(p => p.name, p => p.parameter);

    /// <summary>Detached CPU copies of every parameter, by name.</summary>
    public Dictionary<string, Tensor> StateTensors()
    {
        using var _ = no_grad();
        return named_parameters().ToDictionary(p => p.name, p => p.parameter.detach().cpu().clone());
    }

    /// <summary>Total parameter count.</summary>
    public long ParameterCount => parameters().Sum(p => p.numel());

    /// <summary>
    /// Copies weights into the model by name (any floating dtype, converted). Every parameter must be present
    /// with its shape, else <see cref="ModelWeightsException"/> names the missing and mis-shaped ones. Names
    /// the model does not use (a tied checkpoint's <c>lm_head.weight</c>, old <c>rotary_emb.inv_freq</c> buffers)
    /// are returned.
    /// </summary>
    public IReadOnlyList<string> LoadWeights(IEnumerable<string> names, Func<string, long[]?> shapeOf, Func<string, Tensor> load, string label)
        => NamedWeights.CopyInto(ParametersByName(), names, shapeOf, load, label);

    /// <summary><see cref="LoadWeights(IEnumerable{string}, Func{string, long[]}, Func{string, Tensor}, string)"/> from a dictionary (not disposed).</summary>
    public IReadOnlyList<string> LoadWeights(IReadOnlyDictionary<string, Tensor> tensors, string label = "weights")
        => LoadWeights(tensors.Keys, n => tensors.TryGetValue(n, out var t) ? t.shape : null, n => tensors[n].alias(), label);

    /// <inheritdoc/>
    protected override void Dispose(bool disposing)
    {
        if (disposing) rope.Dispose();
        base.Dispose(disposing);
    }

    sealed class Body : nn.Module
    {
        readonly WeightHolder embed;
        readonly ModuleList<DecoderLayer> layers;
        readonly RmsNorm norm;

        public IReadOnlyList<DecoderLayer> Layers { get; }

        public Body(string fullName, DecoderConfig cfg, DecoderMlpFactory mlpFactory) : base(fullName)
        {
            Parameter w;
            using (no_grad()) w = new Parameter(torch.randn(cfg.VocabSize, cfg.HiddenSize).Times(0.02));
            embed = new WeightHolder(fullName + ".embed_tokens", w);
            var list = Enumerable.Range(0, cfg.NumHiddenLayers)
                .Select(i => new DecoderLayer($"{fullName}.layers.{i}", i, cfg, mlpFactory)).ToArray();
            Layers = list;
            layers = new ModuleList<DecoderLayer>(list);
            norm = new RmsNorm(fullName + ".norm", cfg.HiddenSize, cfg.RmsNormEps);
            register_module("embed_tokens", embed);
            register_module("layers", layers);
            register_module("norm", norm);
        }

        public Tensor EmbedWeight => embed.Value;

        public Tensor Forward(Tensor ids, long start, RotaryEmbedding rope, KvCache? cache)
        {
            var x = embed.Value.index_select(0, ids.flatten()).view(ids.shape[0], ids.shape[1], -1);
            foreach (var layer in Layers) x = layer.Forward(x, start, rope, cache);
            return norm.forward(x);
        }
    }
}
