using System.Diagnostics;
using MergeDsl.Core.Checkpoints;
using MergeDsl.Core.Models.Decoder;
using MergeDsl.Core.Models.Decoder.Tokenizers;
using MergeDsl.Core.Ops;
using static TorchSharp.torch;

namespace MergeDsl.Core.Moe.Sparse.Upcycling;

/// <summary>What an upcycle wrote.</summary>
/// <param name="Output">The output folder.</param>
/// <param name="Architecture">Its format.</param>
/// <param name="Experts">Routed experts per layer.</param>
/// <param name="SharedExperts">Shared experts per layer.</param>
/// <param name="Layers">Decoder layers.</param>
/// <param name="Parameters">Parameters of the output model.</param>
/// <param name="Seconds">Wall time of the whole job.</param>
public sealed record UpcycleSummary(string Output, UpcycleArchitecture Architecture, int Experts, int SharedExperts, int Layers,
    long Parameters, double Seconds);

/// <summary>
/// mergekit-moe in the core: dense Llama/Mistral/Qwen2 models into a Mixtral, Qwen2-MoE or DeepSeek-MoE checkpoint.
/// The CLI (<c>mergedsl moe config.yml</c>) and the F# recipe (<c>Upcycle.run</c>) both run this.
/// </summary>
public static class UpcycleJob
{
    /// <summary>
    /// Checks everything (<see cref="UpcyclePlan.Make"/>: configs and headers, no tensor data), reserves
    /// <paramref name="output"/> (lock; refused when it is an input or exists without <paramref name="overwrite"/>),
    /// computes the router rows, and writes the checkpoint atomically: config.json, the base's non-MLP tensors, every
    /// expert's MLPs under the sparse names, routers, and the base's tokenizer and other small files.
    /// <paramref name="extraFiles"/> (e.g. the mergekit YAML) are written beside them.
    /// </summary>
    /// <exception cref="ArgumentException">Bad input, before anything is read or written.</exception>
    public static UpcycleSummary Run(UpcycleSpec spec, string output, bool overwrite = false,
        IReadOnlyDictionary<string, string>? extraFiles = null)
    {
        var clock = Stopwatch.StartNew();
        var plan = UpcyclePlan.Make(spec);
        spec = plan.Spec;
        using var reserved = OutputFolder.Reserve(output, overwrite,
            spec.Models.Distinct().Select((m, i) => OutputInput.Of(i == 0 ? "base_model" : "source_model", m)));
        using var gates = ComputeGates(plan);
        var files = new Dictionary<string, string>(extraFiles ?? new Dictionary<string, string>())
        {
            [DecoderModelFolder.ConfigFile] = UpcycleConfigJson.Text(plan.Architecture, plan.BaseConfig, spec.Experts.Count,
                spec.SharedExperts.Count, spec.ExpertsPerToken, plan.DType),
        };
        var sources = new Dictionary<string, Checkpoint>(StringComparer.Ordinal);
        try
        {
            foreach (var m in spec.Models.Distinct()) sources[m] = Checkpoint.Open(m);
            using var writer = CheckpointWriter.Create(output, plan.Layout, new CheckpointWriterOptions
            {
                Overwrite = overwrite,
                Output = reserved,
                CopyFilesFrom = spec.BaseModel,
                ExtraFiles = files,
                Metadata = new Dictionary<string, string> { ["format"] = "pt", ["mergedsl"] = $"upcycle {plan.Architecture.Name()} {spec.GateMode.Name()}" },
            });
            var baseCk = sources[spec.BaseModel];
            var arch = plan.Architecture;
            foreach (var (name, _, shape) in plan.Layout)
            {
                using var scope = NewDisposeScope();
                if (plan.ZeroBiases.Contains(name)) { writer.Write(name, zeros(shape)); continue; }
                if (baseCk.TryGetInfo(name, out _)) { writer.Write(name, baseCk.Load(name)); continue; }
            }
            for (int l = 0; l < plan.BaseConfig.NumHiddenLayers; l++)
            {
                using var scope = NewDisposeScope();
                writer.Write(UpcycleNames.Router(arch, l), gates[l, ..spec.Experts.Count]);
                for (int e = 0; e < spec.Experts.Count; e++)
                    foreach (var p in UpcycleNames.DenseProjections)
                        WriteExpert(writer, UpcycleNames.Expert(arch, l, e, p), sources[spec.Experts[e].SourceModel], l, p, spec.Experts[e], spec.Seed);
                if (spec.SharedExperts.Count > 0)
                {
                    foreach (var p in UpcycleNames.DenseProjections)
                        WriteExpert(writer, UpcycleNames.Shared(arch, l, p), sources[spec.SharedExperts[0].SourceModel], l, p, spec.SharedExperts[0], spec.Seed);
                    if (arch == UpcycleArchitecture.Qwen2Moe)
                        writer.Write(UpcycleNames.SharedGate(l), gates[l, spec.Experts.Count..(spec.Experts.Count + 1)]);
                }
            }
            foreach (var s in sources.Values) s.EnsureUnchanged();
            writer.Commit();
        }
        finally
        {
            foreach (var s in sources.Values) s.Dispose();
        }
        return new UpcycleSummary(reserved.Target, plan.Architecture, spec.Experts.Count, spec.SharedExperts.Count,
            plan.BaseConfig.NumHiddenLayers, plan.Parameters, clock.Elapsed.TotalSeconds);
    }

    /// <summary>
    /// The router rows of a checked plan, [layers, gated experts, hidden] in float32: routed experts first, then
    /// Qwen2-MoE's gated shared expert. Loads the base model (hidden modes) or its embedding (cheap_embed).
    /// </summary>
    public static Tensor ComputeGates(UpcyclePlan plan)
    {
        var spec = plan.Spec;
        var experts = plan.GatedExperts;
        switch (spec.GateMode)
        {
            case GateMode.Random or GateMode.UniformRandom:
                return GateVectors.Compute(spec.GateMode, experts, plan.BaseConfig, spec.Seed, null, null, null);
            case GateMode.CheapEmbed:
            {
                var tokenizer = TokenizerFiles.Load(spec.BaseModel, plan.BaseConfig);
                using var ck = Checkpoint.Open(spec.BaseModel);
                using var embed = ck.Load("model.embed_tokens.weight");
                return GateVectors.Compute(spec.GateMode, experts, plan.BaseConfig, spec.Seed, null, embed, tokenizer);
            }
            default:
            {
                var (model, tokenizer) = DecoderModelFolder.LoadWithTokenizer(spec.BaseModel);
                using (model)
                    return GateVectors.Compute(spec.GateMode, experts, plan.BaseConfig, spec.Seed, model, null, tokenizer);
            }
        }
    }

    /// <summary>An expert's dense MLP weight, with its noise (seeded by the output name) and residual scale.</summary>
    static void WriteExpert(CheckpointWriter writer, string outName, Checkpoint source, int layer, string projection, UpcycleExpert expert, long seed)
    {
        using var scope = NewDisposeScope();
        var t = source.Load(UpcycleNames.Dense(layer, projection));
        if (expert.NoiseScale is double n && n > 0)
        {
            using var gen = new TorchSharp.torch.Generator(Seeding.For(seed, outName, 0));
            t = t.to_type(ScalarType.Float32).add(randn(t.shape, generator: gen).mul(n));
        }
        if (projection == "down_proj" && expert.ResidualScale is double r)
            t = t.to_type(ScalarType.Float32).mul(r);
        writer.Write(outName, t);
    }
}
