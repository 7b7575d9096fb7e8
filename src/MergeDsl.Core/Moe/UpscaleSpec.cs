using System.Globalization;
using System.Text.Json.Nodes;
using MergeDsl.Core.Ir;

namespace MergeDsl.Core.Moe;

/// <summary>Which MoE module the selected sites become.</summary>
public enum MoeKind
{
    /// <summary>Weight-ensembling MoE (dense task vectors, trained routers).</summary>
    WeMoE,
    /// <summary>E-WEMoE: task vectors pruned to a kept fraction (top-|x| per tensor); optional shared router.</summary>
    EWeMoE,
    /// <summary>SMILE: training-free low-rank SVD experts routed per token.</summary>
    Smile,
}

/// <summary>
/// An upscaling recipe: which modules become MoE modules and how; every other parameter is merged by
/// task arithmetic θ₀ + λ_rest·Σᵢ(θᵢ − θ₀). Serialised as the <c>mergedsl_moe</c> section of config.json.
/// </summary>
public sealed record UpscaleSpec
{
    /// <summary>Module kind.</summary>
    public MoeKind Kind { get; init; } = MoeKind.WeMoE;
    /// <summary>
    /// Module-path patterns (glob: <c>*</c> any run of characters, dots included, <c>?</c> one; or <c>re:</c>
    /// regex; whole path). Sites: <c>vision_model.encoder.layers.N.mlp</c>, <c>….mlp.fc1</c>, <c>….mlp.fc2</c>,
    /// <c>….self_attn.{q,k,v,out}_proj</c>. Default: every MLP (the paper).
    /// </summary>
    public IReadOnlyList<string> Modules { get; init; } = ["*.mlp"];
    /// <summary>Task-arithmetic λ for the parameters that are not upscaled.</summary>
    public double RestLambda { get; init; } = 0.3;
    /// <summary>WEMoE router depth: 0 (constant), 1 (linear) or 2 (MLP).</summary>
    public int RouterDepth { get; init; } = 2;
    /// <summary>Initial routing weight λ (the router's output bias).</summary>
    public double InitLambda { get; init; } = 0.3;
    /// <summary>One route for the whole batch instead of per sample.</summary>
    public bool BatchReduce { get; init; }
    /// <summary>Expert selection; null = dense for WEMoE, top-1 for SMILE.</summary>
    public RouterSelection? Routing { get; init; }
    /// <summary>E-WEMoE: fraction of each task-vector tensor kept (largest |x|); null = 0.1 for E-WEMoE, 1 otherwise.</summary>
    public double? KeepFraction { get; init; }
    /// <summary>E-WEMoE (or WEMoE): one router shared by all upscaled modules (<c>shared_router.*</c>).</summary>
    public bool SharedRouter { get; init; }
    /// <summary>SMILE: rank k of each expert.</summary>
    public int Rank { get; init; } = 16;
    /// <summary>SMILE: gate rank g (right singular vectors per expert in the gate).</summary>
    public int GateRank { get; init; } = 4;
    /// <summary>Seed of the routers' random initialisation.</summary>
    public long Seed { get; init; } = 42;
    /// <summary>Description of the recipe that merged the non-upscaled parameters when it was not plain task
    /// arithmetic with <see cref="RestLambda"/>; informational.</summary>
    public string? Rest { get; init; }
    /// <summary>Expert (task) names, in expert order; informational.</summary>
    public IReadOnlyList<string> ExpertNames { get; init; } = [];

    /// <summary>The selection actually used.</summary>
    public RouterSelection EffectiveRouting => Routing ?? (Kind == MoeKind.Smile ? RouterSelection.TopKOf(1) : RouterSelection.Dense);

    /// <summary>The kept fraction actually used.</summary>
    public double EffectiveKeepFraction => KeepFraction ?? (Kind == MoeKind.EWeMoE ? 0.1 : 1.0);

    /// <summary>Checks ranges; throws <see cref="ArgumentException"/> naming the field.</summary>
    public UpscaleSpec Validate(int numExperts)
    {
        if (numExperts < 1) throw new ArgumentException("upscaling needs at least one expert model");
        if (Modules.Count == 0) throw new ArgumentException("upscaling: modules selects nothing (empty list)");
        foreach (var m in Modules)
        {
            try { NamePattern.Parse(m); }
            catch (RecipeException e) { throw new ArgumentException($"module {e.Message}"); }
        }
        if (RouterDepth is < 0 or > 2) throw new ArgumentException($"router-depth must be 0, 1 or 2, got {RouterDepth}");
        if (EffectiveKeepFraction is <= 0 or > 1) throw new ArgumentException($"keep fraction must be in (0, 1], got {EffectiveKeepFraction}");
        if (Kind == MoeKind.Smile && (Rank < 1 || GateRank < 1)) throw new ArgumentException($"SMILE rank and gate rank must be positive, got {Rank} and {GateRank}");
        if (Kind == MoeKind.Smile && SharedRouter) throw new ArgumentException("SMILE has no trained router to share");
        EffectiveRouting.Validate(numExperts);
        if (ExpertNames.Count != 0 && ExpertNames.Count != numExperts)
            throw new ArgumentException($"{ExpertNames.Count} expert names for {numExperts} experts");
        return this;
    }

    /// <summary>Kind as text: <c>wemoe</c>, <c>e-wemoe</c>, <c>smile</c>.</summary>
    public static string KindName(MoeKind k) => k switch { MoeKind.EWeMoE => "e-wemoe", MoeKind.Smile => "smile", _ => "wemoe" };

    /// <summary>Parses <c>wemoe</c>, <c>e-wemoe</c> (or <c>sparse-wemoe</c>), <c>smile</c>.</summary>
    public static MoeKind ParseKind(string s) => s.Trim().ToLowerInvariant() switch
    {
        "wemoe" or "we-moe" => MoeKind.WeMoE,
        "e-wemoe" or "ewemoe" or "sparse-wemoe" => MoeKind.EWeMoE,
        "smile" => MoeKind.Smile,
        _ => throw new ArgumentException($"MoE kind '{s}' is not wemoe, e-wemoe or smile"),
    };

    /// <summary>The <c>mergedsl_moe</c> JSON section.</summary>
    public JsonObject ToJson(int numExperts) => new()
    {
        ["kind"] = KindName(Kind),
        ["modules"] = new JsonArray(Modules.Select(m => (JsonNode)m).ToArray()),
        ["num_experts"] = numExperts,
        ["expert_names"] = new JsonArray(ExpertNames.Select(m => (JsonNode)m).ToArray()),
        ["rest_lambda"] = RestLambda,
        ["rest"] = Rest ?? $"task-arithmetic(lambda={RestLambda.ToString("R", CultureInfo.InvariantCulture)})",
        ["router_depth"] = RouterDepth,
        ["init_lambda"] = InitLambda,
        ["batch_reduce"] = BatchReduce,
        ["routing"] = EffectiveRouting.ToString(),
        ["keep_fraction"] = EffectiveKeepFraction,
        ["shared_router"] = SharedRouter,
        ["rank"] = Rank,
        ["gate_rank"] = GateRank,
        ["seed"] = Seed,
    };

    /// <summary>Reads a <c>mergedsl_moe</c> section; returns the spec and the number of experts.</summary>
    public static (UpscaleSpec Spec, int NumExperts) FromJson(JsonObject o, string label = "config.json")
    {
        T Get<T>(string k, T dflt)
        {
            var n = o[k];
            if (n is null) return dflt;
            try { return n.GetValue<T>(); }
            catch (Exception) { throw new FormatException($"{label}: mergedsl_moe.{k} has the wrong type ({n.ToJsonString()})"); }
        }
        List<string> Strings(string k) => (o[k] as JsonArray)?.Select(n => n!.GetValue<string>()).ToList() ?? [];
        int n = Get("num_experts", 0);
        if (n < 1) throw new FormatException($"{label}: mergedsl_moe.num_experts must be a positive integer");
        var d = new UpscaleSpec();
        var spec = new UpscaleSpec
        {
            Kind = ParseKind(Get("kind", "wemoe")),
            Modules = Strings("modules") is { Count: > 0 } ms ? ms : d.Modules,
            ExpertNames = Strings("expert_names"),
            RestLambda = Get("rest_lambda", d.RestLambda),
            Rest = Get<string?>("rest", null),
            RouterDepth = Get("router_depth", d.RouterDepth),
            InitLambda = Get("init_lambda", d.InitLambda),
            BatchReduce = Get("batch_reduce", false),
            Routing = o["routing"] is null ? null : RouterSelection.Parse(Get("routing", "dense")),
            KeepFraction = o["keep_fraction"] is null ? null : Get("keep_fraction", 1.0),
            SharedRouter = Get("shared_router", false),
            Rank = Get("rank", d.Rank),
            GateRank = Get("gate_rank", d.GateRank),
            Seed = Get("seed", d.Seed),
        };
        try { return (spec.Validate(n), n); }
        catch (ArgumentException e) { throw new FormatException($"{label}: mergedsl_moe: {e.Message}"); }
    }
}
