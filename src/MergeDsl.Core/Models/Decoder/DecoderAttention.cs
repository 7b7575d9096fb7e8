using TorchSharp;
using static TorchSharp.torch;

namespace MergeDsl.Core.Models.Decoder;

/// <summary>
/// Causal grouped-query self-attention with HF names <c>q_proj</c>, <c>k_proj</c>, <c>v_proj</c>, <c>o_proj</c>:
/// queries have <c>num_attention_heads</c> heads, keys and values <c>num_key_value_heads</c>, each shared by
/// <see cref="DecoderConfig.Groups"/> consecutive query heads (HF's <c>repeat_kv</c>); rotary embeddings on q and k.
/// </summary>
public sealed class DecoderAttention : nn.Module
{
    readonly DecoderConfig cfg;
    readonly int layerIndex;
    readonly ClipLinear q, k, v, o;

    /// <summary>Creates layer <paramref name="layerIndex"/>'s attention under <paramref name="fullName"/> (<c>model.layers.N.self_attn</c>).</summary>
    public DecoderAttention(string fullName, int layerIndex, DecoderConfig cfg) : base(fullName)
    {
        this.cfg = cfg;
        this.layerIndex = layerIndex;
        long hd = cfg.HeadDim;
        q = new ClipLinear(fullName + ".q_proj", cfg.HiddenSize, cfg.NumAttentionHeads * hd, cfg.QkvBias);
        k = new ClipLinear(fullName + ".k_proj", cfg.HiddenSize, cfg.NumKeyValueHeads * hd, cfg.QkvBias);
        v = new ClipLinear(fullName + ".v_proj", cfg.HiddenSize, cfg.NumKeyValueHeads * hd, cfg.QkvBias);
        o = new ClipLinear(fullName + ".o_proj", cfg.NumAttentionHeads * hd, cfg.HiddenSize, cfg.OutputBias);
        register_module("q_proj", q);
        register_module("k_proj", k);
        register_module("v_proj", v);
        register_module("o_proj", o);
    }

    /// <summary>
    /// Attends <paramref name="x"/> [B, T, hidden], whose tokens sit at positions <paramref name="start"/> ..
    /// start + T − 1, to itself and (with a cache) to the <paramref name="start"/> cached positions before it.
    /// Each token sees only positions at or before its own.
    /// </summary>
    public Tensor Forward(Tensor x, long start, RotaryEmbedding rope, KvCache? cache)
    {
        long b = x.shape[0], t = x.shape[1], hd = cfg.HeadDim;
        var qs = q.forward(x).view(b, t, cfg.NumAttentionHeads, hd).transpose(1, 2);
        var ks = k.forward(x).view(b, t, cfg.NumKeyValueHeads, hd).transpose(1, 2);
        var vs = v.forward(x).view(b, t, cfg.NumKeyValueHeads, hd).transpose(1, 2);
        qs = rope.Apply(qs, start);
        ks = rope.Apply(ks, start);
        if (cache is not null) (ks, vs) = cache.Append(layerIndex, ks, vs);
        long s = ks.shape[2];
        ks = RepeatKv(ks);
        vs = RepeatKv(vs);
        Tensor attended;
        if (t == 1)
            attended = nn.functional.scaled_dot_product_attention(qs, ks, vs);        // one query sees every key
        else if (s == t)
            attended = nn.functional.scaled_dot_product_attention(qs, ks, vs, null, 0.0, true);
        else
        {
            // Query i sits at position start + i and may see keys 0 .. start + i.
            using var rows = torch.arange(start, start + t, 1, ScalarType.Int64, x.device).unsqueeze(1);
            using var cols = torch.arange(0, s, 1, ScalarType.Int64, x.device).unsqueeze(0);
            using var allowed = cols.le(rows);
            attended = nn.functional.scaled_dot_product_attention(qs, ks, vs, allowed);
        }
        return o.forward(attended.transpose(1, 2).reshape(b, t, cfg.NumAttentionHeads * hd));
    }

    /// <summary>[B, kv, S, d] → [B, kv·groups, S, d], each key/value head repeated for its group of query heads.</summary>
    Tensor RepeatKv(Tensor x)
    {
        int groups = cfg.Groups;
        if (groups == 1) return x;
        long b = x.shape[0], kv = x.shape[1], s = x.shape[2], d = x.shape[3];
        return x.unsqueeze(2).expand(b, kv, groups, s, d).reshape(b, kv * groups, s, d);
    }
}
