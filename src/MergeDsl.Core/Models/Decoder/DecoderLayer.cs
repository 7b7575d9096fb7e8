using TorchSharp;
using static TorchSharp.torch;
using MergeDsl.Core.Torch;

namespace MergeDsl.Core.Models.Decoder;

/// <summary>
/// HF <c>LlamaDecoderLayer</c> (and Mistral's, Qwen2's): pre-norm residual blocks
/// h = x + self_attn(input_layernorm(x)); out = h + mlp(post_attention_layernorm(h)).
/// </summary>
public sealed class DecoderLayer : nn.Module
{
    readonly RmsNorm inputNorm, postNorm;

    /// <summary>The attention block.</summary>
    public DecoderAttention Attention { get; }

    /// <summary>The feed-forward block (dense, or an MoE block from another factory).</summary>
    public DecoderMlp Mlp { get; }

    /// <summary>Creates layer <paramref name="index"/> under <paramref name="fullName"/> (<c>model.layers.N</c>).</summary>
    public DecoderLayer(string fullName, int index, DecoderConfig cfg, DecoderMlpFactory mlpFactory) : base(fullName)
    {
        inputNorm = new RmsNorm(fullName + ".input_layernorm", cfg.HiddenSize, cfg.RmsNormEps);
        Attention = new DecoderAttention(fullName + ".self_attn", index, cfg);
        postNorm = new RmsNorm(fullName + ".post_attention_layernorm", cfg.HiddenSize, cfg.RmsNormEps);
        Mlp = mlpFactory(fullName, index, cfg);
        register_module("input_layernorm", inputNorm);
        register_module("self_attn", Attention);
        register_module("post_attention_layernorm", postNorm);
        register_module(Mlp.LocalName, Mlp);
    }

    /// <summary>The layer's output for tokens at positions <paramref name="start"/> onwards.</summary>
    public Tensor Forward(Tensor x, long start, RotaryEmbedding rope, KvCache? cache)
    {
        var h = x.Plus(Attention.Forward(inputNorm.forward(x), start, rope, cache));
        return h.Plus(Mlp.forward(postNorm.forward(h)));
    }
}
