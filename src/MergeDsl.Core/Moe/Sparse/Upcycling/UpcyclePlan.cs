using MergeDsl.Core.Checkpoints;
using MergeDsl.Core.Models.Decoder;

namespace MergeDsl.Core.Moe.Sparse.Upcycling;

/// <summary>
/// A checked upcycle: the spec, the chosen architecture, the base's configuration, the output dtype and every output
/// tensor's name, dtype and shape. Made by <see cref="Make"/> from config.json files and safetensors headers only.
/// </summary>
/// <param name="Spec">The validated spec.</param>
/// <param name="Architecture">The output format (given, or inferred as mergekit does).</param>
/// <param name="BaseConfig">The base model's configuration.</param>
/// <param name="DType">The output dtype.</param>
/// <param name="Layout">Every output tensor, in writing order.</param>
/// <param name="ZeroBiases">Attention biases the output needs and the base lacks (Qwen2-MoE from Llama/Mistral): written as zeros.</param>
public sealed record UpcyclePlan(UpcycleSpec Spec, UpcycleArchitecture Architecture, DecoderConfig BaseConfig, DType DType,
    IReadOnlyList<(string Name, DType DType, long[] Shape)> Layout, IReadOnlySet<string> ZeroBiases)
{
    /// <summary>Routed experts plus gated shared experts: the rows the gate computation produces per layer.</summary>
    public IReadOnlyList<UpcycleExpert> GatedExperts => Architecture == UpcycleArchitecture.Qwen2Moe
        ? Spec.Experts.Concat(Spec.SharedExperts).ToList()
        : Spec.Experts;

    /// <summary>Parameters of the output model.</summary>
    public long Parameters => Layout.Sum(l => l.Shape.Aggregate(1L, (a, b) => a * b));

    /// <summary>
    /// Validates <paramref name="spec"/> against the models' config.json files and tensor headers: each is a dense
    /// Llama/Mistral/Qwen2 folder (not already a mixture), all of one family that the architecture accepts, no MLP
    /// biases, no o_proj bias for Mixtral/Qwen2-MoE, and every expert's MLP weights with the base's shapes.
    /// </summary>
    /// <exception cref="ArgumentException">The first problem, naming the file, tensor, key or value.</exception>
    public static UpcyclePlan Make(UpcycleSpec spec)
    {
        spec.Validate();
        var configs = new Dictionary<string, DecoderConfig>(StringComparer.Ordinal);
        foreach (var folder in spec.Models.Distinct())
        {
            if (!Directory.Exists(folder)) throw new ArgumentException($"{folder}: no such model folder");
            try
            {
                if (DecoderMoeFolder.IsDecoderMoe(folder))
                    throw new ArgumentException($"{folder}: is already a mixture of experts; give dense models");
                configs[folder] = DecoderConfig.Load(folder);
            }
            catch (Exception e) when (e is FormatException or IOException)
            {
                throw new ArgumentException(e.Message);
            }
        }
        var baseCfg = configs[spec.BaseModel];
        foreach (var (folder, cfg) in configs)
        {
            if (cfg.Family != baseCfg.Family)
                throw new ArgumentException($"{folder}: is a {cfg.Family.ModelType()} model but the base is {baseCfg.Family.ModelType()}; every input must be of one family (as mergekit-moe)");
            if (cfg.MlpBias)
                throw new ArgumentException($"{folder}: its MLPs carry biases (mlp_bias), which sparse MoE experts do not have");
        }
        var arch = Choose(spec, baseCfg);
        if (arch != UpcycleArchitecture.DeepseekMoe && baseCfg.OutputBias)
            throw new ArgumentException($"{spec.BaseModel}: its attention has an o_proj bias (attention_bias), which {arch.Name()} does not have");
        if (arch == UpcycleArchitecture.DeepseekMoe && baseCfg.OutputBias)
            throw new ArgumentException($"{spec.BaseModel}: attention_bias is not written to DeepSeek MoE by this tool");
        // DeepSeek-MoE's remote code (modeling_deepseek.py) builds its rotary from rope_scaling["type"], linear or dynamic only.
        if (arch == UpcycleArchitecture.DeepseekMoe && baseCfg.RopeScaling is { } rs && rs is not RopeScaling.Linear)
            throw new ArgumentException($"{spec.BaseModel}: its rope_scaling type '{rs.Type}' cannot be written to DeepSeek MoE, whose modelling code implements linear scaling only (choose Mixtral)");

        var outType = spec.DType ?? BaseDType(spec.BaseModel);
        var layout = new List<(string, DType, long[])>();
        var zeroBiases = new HashSet<string>(StringComparer.Ordinal);
        long h = baseCfg.HiddenSize, inter = baseCfg.IntermediateSize;
        var mlpShapes = new Dictionary<string, long[]> { ["gate_proj"] = [inter, h], ["up_proj"] = [inter, h], ["down_proj"] = [h, inter] };
        using (var baseCk = Open(spec.BaseModel))
        {
            foreach (var t in baseCk.Tensors)
            {
                if (t.Name.Contains(".mlp.", StringComparison.Ordinal) || t.Name.EndsWith("rotary_emb.inv_freq", StringComparison.Ordinal)) continue;
                if (t.Name == "lm_head.weight" && baseCfg.TieWordEmbeddings) continue;
                if (!IsWeight(t.DType))
                    throw new ArgumentException($"{baseCk.Label}: tensor '{t.Name}' is {DTypes.ToSafetensorsName(t.DType)}, not a floating-point weight");
                layout.Add((t.Name, outType, t.Shape.ToArray()));
            }
            if (arch == UpcycleArchitecture.Qwen2Moe && !baseCfg.QkvBias)
                for (int l = 0; l < baseCfg.NumHiddenLayers; l++)
                    foreach (var (proj, heads) in new[] { ("q_proj", baseCfg.NumAttentionHeads), ("k_proj", baseCfg.NumKeyValueHeads), ("v_proj", baseCfg.NumKeyValueHeads) })
                    {
                        string name = $"model.layers.{l}.self_attn.{proj}.bias";
                        zeroBiases.Add(name);
                        layout.Add((name, outType, [(long)heads * baseCfg.HeadDim]));
                    }
            CheckMlps(baseCk, baseCfg.NumHiddenLayers, mlpShapes, null);
        }
        foreach (var folder in spec.Experts.Concat(spec.SharedExperts).Select(e => e.SourceModel).Distinct().Where(f => f != spec.BaseModel))
        {
            using var ck = Open(folder);
            CheckMlps(ck, baseCfg.NumHiddenLayers, mlpShapes, spec.BaseModel);
        }
        for (int l = 0; l < baseCfg.NumHiddenLayers; l++)
        {
            layout.Add((UpcycleNames.Router(arch, l), outType, [spec.Experts.Count, h]));
            for (int e = 0; e < spec.Experts.Count; e++)
                foreach (var p in UpcycleNames.DenseProjections)
                    layout.Add((UpcycleNames.Expert(arch, l, e, p), outType, mlpShapes[p]));
            if (spec.SharedExperts.Count > 0)
            {
                foreach (var p in UpcycleNames.DenseProjections)
                    layout.Add((UpcycleNames.Shared(arch, l, p), outType, mlpShapes[p]));
                if (arch == UpcycleArchitecture.Qwen2Moe)
                    layout.Add((UpcycleNames.SharedGate(l), outType, [1, h]));
            }
        }
        return new UpcyclePlan(spec, arch, baseCfg, outType, layout, zeroBiases);
    }

    /// <summary>The architecture: the given one (checked), else mergekit's choice among those that fit (Mixtral first).</summary>
    static UpcycleArchitecture Choose(UpcycleSpec spec, DecoderConfig baseCfg)
    {
        string? FamilyProblem(UpcycleArchitecture a) => a == UpcycleArchitecture.Qwen2Moe || baseCfg.Family != DecoderFamily.Qwen2
            ? null
            : $"{a.Name()} takes Llama or Mistral models, and the inputs are Qwen2";
        if (spec.Architecture is { } given)
        {
            if (FamilyProblem(given) is { } why) throw new SettingException("architecture", why);
            return given;
        }
        var reasons = new List<string>();
        foreach (var (a, _) in UpcycleArchitectures.All)
        {
            var why = spec.Unsupported(a) ?? FamilyProblem(a);
            if (why is null) return a;
            reasons.Add($"{a.Name()}: {why}");
        }
        throw new SettingException("architecture", $"no output architecture fits ({string.Join("; ", reasons)})");
    }

    static Checkpoint Open(string folder)
    {
        try { return Checkpoint.Open(folder); }
        catch (Exception e) when (e is CheckpointFormatException or IOException) { throw new ArgumentException($"{folder}: not a readable checkpoint ({e.Message})"); }
    }

    /// <summary>The dtype of the base's embedding (its weights' dtype), F32 when it is not a float type.</summary>
    static DType BaseDType(string folder)
    {
        using var ck = Open(folder);
        return ck.TryGetInfo("model.embed_tokens.weight", out var info) && IsWeight(info.DType) ? info.DType : DType.F32;
    }

    static bool IsWeight(DType d) => DTypes.IsFloatingPoint(d) && !DTypes.IsFloat8(d);

    static void CheckMlps(Checkpoint ck, int layers, IReadOnlyDictionary<string, long[]> shapes, string? baseFolder)
    {
        for (int l = 0; l < layers; l++)
            foreach (var p in UpcycleNames.DenseProjections)
            {
                string name = UpcycleNames.Dense(l, p);
                var want = shapes[p];
                if (!ck.TryGetInfo(name, out var info))
                    throw new ArgumentException($"{ck.Label}: has no tensor '{name}' (every expert needs the base's {layers} dense MLPs)");
                if (!info.Shape.SequenceEqual(want))
                    throw new ArgumentException($"{ck.Label}: tensor '{name}' is [{string.Join(", ", info.Shape)}] but "
                        + (baseFolder is null ? $"its config.json implies [{string.Join(", ", want)}]" : $"the base's ({baseFolder}) is [{string.Join(", ", want)}]"));
                if (!IsWeight(info.DType))
                    throw new ArgumentException($"{ck.Label}: tensor '{name}' is {DTypes.ToSafetensorsName(info.DType)}, not a floating-point weight");
            }
    }
}
