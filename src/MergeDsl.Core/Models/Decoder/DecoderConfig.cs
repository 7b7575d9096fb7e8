using System.Text.Json;
using System.Text.Json.Nodes;
using MergeDsl.Core.Checkpoints;
using MergeDsl.Core.Moe.Sparse;
using JsonObject = System.Text.Json.Nodes.JsonObject;
using JsonNode = System.Text.Json.Nodes.JsonNode;
using JsonArray = System.Text.Json.Nodes.JsonArray;
using JsonValue = System.Text.Json.Nodes.JsonValue;

namespace MergeDsl.Core.Models.Decoder;

/// <summary>
/// The fields of a Hugging Face <c>LlamaConfig</c> / <c>MistralConfig</c> / <c>Qwen2Config</c> the runtime
/// uses. Keys read: <c>architectures</c>, <c>model_type</c>, <c>vocab_size</c>, <c>hidden_size</c>,
/// <c>intermediate_size</c>, <c>num_hidden_layers</c>, <c>num_attention_heads</c>, <c>num_key_value_heads</c>,
/// <c>head_dim</c>, <c>hidden_act</c> (silu only), <c>max_position_embeddings</c>, <c>rms_norm_eps</c>,
/// <c>rope_theta</c>, <c>rope_scaling</c> (absent, null, or type <c>default</c>, <c>linear</c> or <c>llama3</c>: see
/// <see cref="RopeScaling"/>; transformers 5's <c>rope_parameters</c> likewise), <c>tie_word_embeddings</c>,
/// <c>attention_bias</c> and <c>mlp_bias</c> (Llama), <c>sliding_window</c> (Mistral; Qwen2 with
/// <c>use_sliding_window</c>), <c>bos_token_id</c>, <c>eos_token_id</c>; for the sparse families (Mixtral,
/// Qwen2-MoE, DeepSeek-MoE) also their MoE keys (see <see cref="Moe"/>).
/// </summary>
public sealed record DecoderConfig
{
    /// <summary>Which family (and so which defaults and biases).</summary>
    public DecoderFamily Family { get; init; } = DecoderFamily.Llama;
    /// <summary>Rows of the embedding and of the LM head (<c>vocab_size</c>).</summary>
    public int VocabSize { get; init; } = 32000;
    /// <summary>Width of the residual stream (<c>hidden_size</c>).</summary>
    public int HiddenSize { get; init; } = 4096;
    /// <summary>Width of the SwiGLU MLP (<c>intermediate_size</c>).</summary>
    public int IntermediateSize { get; init; } = 11008;
    /// <summary>Decoder layers (<c>num_hidden_layers</c>).</summary>
    public int NumHiddenLayers { get; init; } = 32;
    /// <summary>Query heads (<c>num_attention_heads</c>).</summary>
    public int NumAttentionHeads { get; init; } = 32;
    /// <summary>Key/value heads (<c>num_key_value_heads</c>); divides the query heads (grouped-query attention).</summary>
    public int NumKeyValueHeads { get; init; } = 32;
    /// <summary>Per-head width (<c>head_dim</c>, else hidden_size / num_attention_heads); even, for the rotary halves.</summary>
    public int HeadDim { get; init; } = 128;
    /// <summary>Longest sequence (prompt plus generated tokens) the model accepts (<c>max_position_embeddings</c>).</summary>
    public int MaxPositionEmbeddings { get; init; } = 2048;
    /// <summary>RMSNorm epsilon (<c>rms_norm_eps</c>).</summary>
    public double RmsNormEps { get; init; } = 1e-6;
    /// <summary>Rotary base (<c>rope_theta</c>).</summary>
    public double RopeTheta { get; init; } = 10000.0;
    /// <summary>The rotary frequencies' <c>rope_scaling</c> (linear or llama3); null when unscaled.</summary>
    public RopeScaling? RopeScaling { get; init; }
    /// <summary>The LM head is the embedding matrix (<c>tie_word_embeddings</c>; no <c>lm_head.weight</c> is read).</summary>
    public bool TieWordEmbeddings { get; init; }
    /// <summary>q/k/v projections carry a bias (Qwen2 always; Llama with <c>attention_bias</c>).</summary>
    public bool QkvBias { get; init; }
    /// <summary>o_proj carries a bias (Llama with <c>attention_bias</c>).</summary>
    public bool OutputBias { get; init; }
    /// <summary>gate/up/down projections carry a bias (Llama <c>mlp_bias</c>).</summary>
    public bool MlpBias { get; init; }
    /// <summary>Attention window when sliding-window attention is on, else null. Longer sequences are refused.</summary>
    public int? SlidingWindow { get; init; }
    /// <summary><c>bos_token_id</c>, when the config names one.</summary>
    public int? BosTokenId { get; init; }
    /// <summary><c>eos_token_id</c> (the first, when a list), when the config names one.</summary>
    public int? EosTokenId { get; init; }

    /// <summary>The sparse-MoE settings (Mixtral, Qwen2-MoE, DeepSeek-MoE with routed experts); null for dense models.</summary>
    public SparseMoeConfig? Moe { get; init; }

    /// <summary>Query-heads per key/value head.</summary>
    public int Groups => NumAttentionHeads / NumKeyValueHeads;

    /// <summary>Throws <see cref="ArgumentException"/> naming the first inconsistent field.</summary>
    public DecoderConfig Validate()
    {
        void Positive(string name, double v) { if (!(v > 0)) throw new ArgumentException($"{name} must be positive, got {v}"); }
        Positive("vocab_size", VocabSize); Positive("hidden_size", HiddenSize);
        Positive("intermediate_size", IntermediateSize); Positive("num_hidden_layers", NumHiddenLayers);
        Positive("num_attention_heads", NumAttentionHeads); Positive("num_key_value_heads", NumKeyValueHeads);
        Positive("head_dim", HeadDim); Positive("max_position_embeddings", MaxPositionEmbeddings);
        Positive("rms_norm_eps", RmsNormEps); Positive("rope_theta", RopeTheta);
        if (SlidingWindow is int w) Positive("sliding_window", w);
        RopeScaling?.Validate();
        if (NumAttentionHeads % NumKeyValueHeads != 0)
            throw new ArgumentException($"num_attention_heads {NumAttentionHeads} is not a multiple of num_key_value_heads {NumKeyValueHeads}");
        if (HeadDim % 2 != 0) throw new ArgumentException($"head_dim {HeadDim} is odd; rotary embeddings rotate pairs of halves");
        var attention = Family.AttentionFamily();
        if (attention == DecoderFamily.Qwen2 && (!QkvBias || OutputBias))
            throw new ArgumentException($"{Family} has q/k/v biases and no o_proj bias");
        if (attention == DecoderFamily.Llama && QkvBias != OutputBias)
            throw new ArgumentException($"{Family}'s attention_bias applies to q/k/v and o_proj alike");
        if (attention == DecoderFamily.Mistral && (QkvBias || OutputBias || MlpBias))
            throw new ArgumentException($"{Family} has no biases");
        if (MlpBias && Family != DecoderFamily.Llama) throw new ArgumentException("only Llama has mlp_bias");
        if (Moe is not null)
        {
            var style = Family switch
            {
                DecoderFamily.Mixtral => SparseMoeStyle.Mixtral,
                DecoderFamily.Qwen2Moe => SparseMoeStyle.Qwen2Moe,
                DecoderFamily.DeepseekMoe => SparseMoeStyle.DeepseekMoe,
                _ => throw new ArgumentException($"{Family.Architecture()} is a dense architecture; MoE settings need Mixtral, Qwen2-MoE or DeepSeek-MoE"),
            };
            if (Moe.Style != style) throw new ArgumentException($"{Family.Architecture()} needs the {style} MoE style, got {Moe.Style}");
            if (style == SparseMoeStyle.Mixtral && Moe.ExpertIntermediateSize != IntermediateSize)
                throw new ArgumentException($"Mixtral's intermediate_size is its experts' width: {IntermediateSize} differs from the experts' {Moe.ExpertIntermediateSize}");
            Moe.Validate();
        }
        else if (Family == DecoderFamily.Mixtral) throw new ArgumentException("Mixtral needs its MoE settings (num_local_experts)");
        return this;
    }

    /// <summary>Parses a config.json; <paramref name="label"/> (the file) starts every error message.</summary>
    /// <exception cref="FormatException">Not JSON, an unknown architecture, an unsupported feature, or a bad value.</exception>
    public static DecoderConfig FromJson(string json, string label = "config.json")
    {
        var o = JsonFiles.ParseObject(json, label);
        FormatException Bad(string what) => new($"{label}: {what}");

        string? Str(string key)
        {
            var n = o[key];
            if (n is null) return null;
            if (n is JsonValue v && v.TryGetValue<string>(out var s)) return s;
            throw Bad($"{key} must be a string, got {n.ToJsonString()}");
        }
        int? OptInt(string key)
        {
            var n = o[key];
            if (n is null) return null;
            if (n is JsonValue v && v.TryGetValue<long>(out var l) && l is >= int.MinValue and <= int.MaxValue) return (int)l;
            throw Bad($"{key} must be an integer, got {n.ToJsonString()}");
        }
        int Int(string key) => OptInt(key) ?? throw Bad($"{key} is missing");
        double Num(string key, double dflt)
        {
            var n = o[key];
            if (n is null) return dflt;
            if (n is JsonValue v && v.TryGetValue<double>(out var d)) return d;
            throw Bad($"{key} must be a number, got {n.ToJsonString()}");
        }
        bool Bool(string key, bool dflt)
        {
            var n = o[key];
            if (n is null) return dflt;
            if (n is JsonValue v && v.TryGetValue<bool>(out var b)) return b;
            throw Bad($"{key} must be true or false, got {n.ToJsonString()}");
        }

        var family = ReadFamily(o, Str("model_type"), label);
        var attention = family.AttentionFamily();
        string act = Str("hidden_act") ?? "silu";
        if (act != "silu") throw Bad($"hidden_act '{act}' is not supported (the runtime implements silu, as Llama, Mistral and Qwen2 use)");
        var (ropeTheta, ropeScaling) = ReadRope(o, label);
        if (Bool("attention_sink", false)) throw Bad("attention_sink is not supported");

        int heads = Int("num_attention_heads");
        int hidden = Int("hidden_size");
        int? window = attention switch
        {
            DecoderFamily.Mistral => OptInt("sliding_window"),
            DecoderFamily.Qwen2 when Bool("use_sliding_window", false) => OptInt("sliding_window"),
            _ => null,
        };
        bool attnBias = attention == DecoderFamily.Llama && Bool("attention_bias", false);
        int? eos = o["eos_token_id"] is JsonArray eosList
            ? (eosList.Count > 0 && eosList[0] is JsonValue ev && ev.TryGetValue<int>(out var e0) ? e0 : throw Bad("eos_token_id must be an integer or a list of them"))
            : OptInt("eos_token_id");
        var cfg = new DecoderConfig
        {
            Family = family,
            VocabSize = Int("vocab_size"),
            HiddenSize = hidden,
            IntermediateSize = Int("intermediate_size"),
            NumHiddenLayers = Int("num_hidden_layers"),
            NumAttentionHeads = heads,
            NumKeyValueHeads = OptInt("num_key_value_heads") ?? (attention == DecoderFamily.Mistral ? 8 : heads),
            HeadDim = OptInt("head_dim") ?? (heads > 0 && hidden % heads == 0 ? hidden / heads
                : throw Bad($"hidden_size {hidden} is not divisible by num_attention_heads {heads} and there is no head_dim")),
            MaxPositionEmbeddings = OptInt("max_position_embeddings") ?? attention switch
            {
                DecoderFamily.Llama => 2048,
                DecoderFamily.Mistral => 4096 * 32,
                _ => 32768,
            },
            RmsNormEps = Num("rms_norm_eps", 1e-6),
            RopeTheta = ropeTheta,
            RopeScaling = ropeScaling,
            TieWordEmbeddings = Bool("tie_word_embeddings", false),
            QkvBias = (attention == DecoderFamily.Qwen2 && Bool("qkv_bias", true)) || attnBias,
            OutputBias = attnBias,
            MlpBias = family == DecoderFamily.Llama && Bool("mlp_bias", false),
            SlidingWindow = window,
            BosTokenId = OptInt("bos_token_id"),
            EosTokenId = eos,
            Moe = ReadMoe(),
        };
        try { return cfg.Validate(); }
        catch (ArgumentException ex) { throw Bad(ex.Message); }

        RoutingPolicy? Routing()
        {
            string? text = Str(RoutingKey);
            if (text is null) return null;
            try { return RoutingPolicy.Parse(text); }
            catch (Exception e) when (e is FormatException or ArgumentException) { throw Bad($"{RoutingKey}: {e.Message}"); }
        }
        IReadOnlyList<int> IntList(string key)
        {
            var n = o[key];
            if (n is null) return [];
            if (n is not JsonArray a) throw Bad($"{key} must be a list of layer indices, got {n.ToJsonString()}");
            return a.Select(e => e is JsonValue v && v.TryGetValue<int>(out int i) ? i : throw Bad($"{key} must be a list of layer indices, got {n.ToJsonString()}")).ToArray();
        }
        SparseMoeConfig? ReadMoe()
        {
            switch (family)
            {
                case DecoderFamily.Mixtral:
                    return new SparseMoeConfig
                    {
                        Style = SparseMoeStyle.Mixtral,
                        NumExperts = OptInt("num_local_experts") ?? 8,
                        ExpertsPerToken = OptInt("num_experts_per_tok") ?? 2,
                        ExpertIntermediateSize = Int("intermediate_size"),
                        NormTopKProb = true,
                        Routing = Routing(),
                    };
                case DecoderFamily.Qwen2Moe:
                {
                    int n = OptInt("num_experts") ?? 60;
                    if (n == 0) return null;   // HF builds dense MLPs in every layer
                    int shared = OptInt("shared_expert_intermediate_size") ?? 5632;
                    return new SparseMoeConfig
                    {
                        Style = SparseMoeStyle.Qwen2Moe,
                        NumExperts = n,
                        ExpertsPerToken = OptInt("num_experts_per_tok") ?? 4,
                        ExpertIntermediateSize = OptInt("moe_intermediate_size") ?? 1408,
                        NormTopKProb = Bool("norm_topk_prob", false),
                        SharedExpertIntermediateSize = shared,
                        NumSharedExperts = shared > 0 ? 1 : 0,
                        SharedExpertGate = shared > 0,
                        DecoderSparseStep = OptInt("decoder_sparse_step") ?? 1,
                        MlpOnlyLayers = IntList("mlp_only_layers"),
                        Routing = Routing(),
                    };
                }
                case DecoderFamily.DeepseekMoe:
                {
                    int? n = OptInt("n_routed_experts");
                    if (n is null) return null;   // DeepSeek builds dense MLPs in every layer
                    string scoring = Str("scoring_func") ?? "softmax";
                    if (scoring != "softmax") throw Bad($"scoring_func '{scoring}' is not supported (DeepSeek-MoE v1 uses softmax)");
                    if (Str("topk_method") is string tm && tm != "greedy") throw Bad($"topk_method '{tm}' is not supported (only greedy top-k, as DeepSeek-MoE v1)");
                    int width = OptInt("moe_intermediate_size") ?? 1407;
                    int nShared = OptInt("n_shared_experts") ?? 0;
                    return new SparseMoeConfig
                    {
                        Style = SparseMoeStyle.DeepseekMoe,
                        NumExperts = n.Value,
                        ExpertsPerToken = OptInt("num_experts_per_tok") ?? throw Bad("num_experts_per_tok is missing"),
                        ExpertIntermediateSize = width,
                        NormTopKProb = Bool("norm_topk_prob", false),
                        NumSharedExperts = nShared,
                        SharedExpertIntermediateSize = checked(width * nShared),
                        FirstKDenseReplace = OptInt("first_k_dense_replace") ?? 0,
                        MoeLayerFreq = OptInt("moe_layer_freq") ?? 1,
                        RoutedScalingFactor = Num("routed_scaling_factor", 1.0),
                        Routing = Routing(),
                    };
                }
                default:
                    return null;
            }
        }
    }

    /// <summary>The config.json key holding a sparse model's own routing when it is not top-k (our extension; transformers ignores it).</summary>
    public const string RoutingKey = "mergedsl_routing";

    /// <summary>
    /// <c>rope_theta</c> and <c>rope_scaling</c>, or transformers 5's <c>rope_parameters</c>, which holds both (its
    /// configs have no top-level <c>rope_theta</c>, so ignoring it would silently fall back to 10000).
    /// Where both forms are given they must agree.
    /// </summary>
    static (double Theta, RopeScaling? Scaling) ReadRope(JsonObject o, string label)
    {
        FormatException Bad(string what) => new($"{label}: {what}");
        double? Theta(JsonObject from, string shown) => from["rope_theta"] switch
        {
            null => null,
            JsonValue v when v.TryGetValue<double>(out var d) => d,
            var n => throw Bad($"{shown} must be a number, got {n.ToJsonString()}"),
        };
        RopeScaling? Scaling(JsonNode? node, string key)
        {
            try { return RopeScaling.FromJson(node, key); }
            catch (ArgumentException e) { throw Bad(e.Message); }
        }
        double? theta = Theta(o, "rope_theta");
        var scaling = Scaling(o["rope_scaling"], "rope_scaling");
        if (o["rope_parameters"] is not JsonNode p) return (theta ?? 10000.0, scaling);
        if (p is not JsonObject po) throw Bad($"rope_parameters must be an object, got {p.ToJsonString()}");
        var fromParameters = Scaling(po, "rope_parameters");
        if (o["rope_scaling"] is not null && fromParameters != scaling)
            throw Bad($"rope_scaling {o["rope_scaling"]!.ToJsonString()} and rope_parameters {po.ToJsonString()} disagree");
        double? inner = Theta(po, "rope_parameters.rope_theta");
        if (theta is double top && inner is double both && top != both)
            throw Bad($"rope_theta {top} and rope_parameters.rope_theta {both} disagree");
        return (inner ?? theta ?? 10000.0, fromParameters);
    }

    static DecoderFamily ReadFamily(JsonObject o, string? modelType, string label)
    {
        var known = string.Join(", ", DecoderFamilies.All.Select(a => a.Architecture));
        DecoderFamily? byArch = null;
        if (o["architectures"] is JsonNode archNode)
        {
            if (archNode is not JsonArray archs || archs.Count == 0)
                throw new FormatException($"{label}: architectures must be a non-empty list, got {archNode.ToJsonString()}");
            var names = archs.Select(a => a?.ToString() ?? "null").ToList();
            byArch = names.Select(DecoderFamilies.FromArchitecture).FirstOrDefault(f => f is not null);
            if (byArch is null)
                throw new FormatException($"{label}: architectures [{string.Join(", ", names)}] is not a supported decoder (supported: {known})");
        }
        DecoderFamily? byType = null;
        if (modelType is not null)
        {
            byType = DecoderFamilies.FromModelType(modelType)
                     ?? throw new FormatException($"{label}: model_type '{modelType}' is not supported (supported: {string.Join(", ", DecoderFamilies.All.Select(a => a.ModelType))})");
        }
        if (byArch is { } a && byType is { } t && a != t)
            throw new FormatException($"{label}: architectures says {a.Architecture()} but model_type is '{t.ModelType()}'");
        return byArch ?? byType ?? throw new FormatException($"{label}: neither architectures nor model_type is given");
    }

    /// <summary>Reads <paramref name="path"/> (a config.json, or a folder holding one) through <see cref="ModelFiles"/>.</summary>
    public static DecoderConfig Load(string path)
    {
        bool isFolder = Directory.Exists(path);
        string file = isFolder ? Path.Combine(path, "config.json") : path;
        if (isFolder) ModelFiles.RefuseUnfinished(path);
        if (UnixFiles.TryStat(file, followLinks: false) is null) throw new FileNotFoundException($"{file}: no config.json (expected a Hugging Face decoder model folder)", file);
        return FromJson(ModelFiles.ReadText(file, isFolder ? path : null), file);
    }

    /// <summary>A config.json object that transformers' <c>AutoConfig</c> reads back to this configuration.</summary>
    public JsonObject ToJsonObject()
    {
        var o = new JsonObject
        {
            ["architectures"] = new JsonArray(Family.Architecture()),
            ["model_type"] = Family.ModelType(),
            ["vocab_size"] = VocabSize,
            ["hidden_size"] = HiddenSize,
            ["intermediate_size"] = IntermediateSize,
            ["num_hidden_layers"] = NumHiddenLayers,
            ["num_attention_heads"] = NumAttentionHeads,
            ["num_key_value_heads"] = NumKeyValueHeads,
            ["head_dim"] = HeadDim,
            ["hidden_act"] = "silu",
            ["max_position_embeddings"] = MaxPositionEmbeddings,
            ["rms_norm_eps"] = RmsNormEps,
            ["rope_theta"] = RopeTheta,
            ["tie_word_embeddings"] = TieWordEmbeddings,
            ["torch_dtype"] = "float32",
        };
        if (RopeScaling is { } scaling) o["rope_scaling"] = scaling.ToJsonObject();
        if (BosTokenId is int bos) o["bos_token_id"] = bos;
        if (EosTokenId is int eos) o["eos_token_id"] = eos;
        switch (Family.AttentionFamily())
        {
            case DecoderFamily.Llama:
                o["attention_bias"] = QkvBias;
                if (Family == DecoderFamily.Llama) o["mlp_bias"] = MlpBias;
                break;
            case DecoderFamily.Mistral:
                o["sliding_window"] = SlidingWindow is int w ? w : null;
                break;
            case DecoderFamily.Qwen2:
                o["use_sliding_window"] = SlidingWindow is not null;
                if (SlidingWindow is int qw) o["sliding_window"] = qw;
                break;
        }
        WriteMoe(o);
        return o;
    }

    void WriteMoe(JsonObject o)
    {
        var m = Moe;
        switch (Family)
        {
            case DecoderFamily.Mixtral when m is not null:
                o["num_local_experts"] = m.NumExperts;
                o["num_experts_per_tok"] = m.ExpertsPerToken;
                o["output_router_logits"] = false;
                o["router_aux_loss_coef"] = 0.001;
                o["router_jitter_noise"] = 0.0;
                break;
            case DecoderFamily.Qwen2Moe:
                o["num_experts"] = m?.NumExperts ?? 0;
                o["num_experts_per_tok"] = m?.ExpertsPerToken ?? 1;
                o["moe_intermediate_size"] = m?.ExpertIntermediateSize ?? IntermediateSize;
                o["shared_expert_intermediate_size"] = m?.SharedExpertIntermediateSize ?? 0;
                o["norm_topk_prob"] = m?.NormTopKProb ?? false;
                o["decoder_sparse_step"] = m?.DecoderSparseStep ?? 1;
                o["mlp_only_layers"] = new JsonArray((m?.MlpOnlyLayers ?? []).Select(i => (JsonNode)JsonValue.Create(i)).ToArray());
                o["output_router_logits"] = false;
                o["router_aux_loss_coef"] = 0.001;
                break;
            case DecoderFamily.DeepseekMoe:
                o["n_routed_experts"] = m is null ? null : m.NumExperts;
                o["num_experts_per_tok"] = m?.ExpertsPerToken;
                o["n_shared_experts"] = m is null || m.NumSharedExperts == 0 ? null : m.NumSharedExperts;
                o["moe_intermediate_size"] = m?.ExpertIntermediateSize ?? IntermediateSize;
                o["first_k_dense_replace"] = m?.FirstKDenseReplace ?? 0;
                o["moe_layer_freq"] = m?.MoeLayerFreq ?? 1;
                o["norm_topk_prob"] = m?.NormTopKProb ?? false;
                o["scoring_func"] = "softmax";
                if (m is not null && m.RoutedScalingFactor != 1.0) o["routed_scaling_factor"] = m.RoutedScalingFactor;
                break;
        }
        if (m?.Routing is { } r) o[RoutingKey] = r.ToString();
    }

    /// <summary>Indented JSON of <see cref="ToJsonObject"/>.</summary>
    public string ToJson() => ToJsonObject().ToJsonString(new JsonSerializerOptions { WriteIndented = true });
}
