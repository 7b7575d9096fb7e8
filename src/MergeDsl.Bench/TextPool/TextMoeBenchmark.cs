using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using MergeDsl.Bench.Data;
using MergeDsl.Bench.TaskPool;
using MergeDsl.Core.Models.Decoder;
using MergeDsl.Core.Moe.Sparse;
using MergeDsl.Core.Moe.Sparse.Upcycling;

namespace MergeDsl.Bench.TextPool;

/// <summary>One row of the sparse-mixture table.</summary>
/// <param name="Method">Row name (gate mode, routing, shared expert).</param>
/// <param name="Scores">Test scores per domain, in the result's domain order.</param>
/// <param name="ExpertsPerToken">Mean routed experts per token over the test text (0 for a dense model).</param>
/// <param name="TokensPerSecond">Bytes scored per second over the test text (one token per byte).</param>
/// <param name="Parameters">Parameters of the model.</param>
/// <param name="ActiveParameters">Parameters one token touches on average (routed experts at their mean count).</param>
/// <param name="Chosen">The routing used (top-p: the p chosen on held-in validation text).</param>
/// <param name="Validation">Mean held-in validation bits per byte of every routing tried, by routing.</param>
public sealed record TextMoeRow(string Method, IReadOnlyList<TextScore> Scores, double ExpertsPerToken, double TokensPerSecond,
    long Parameters, long ActiveParameters, string Chosen, IReadOnlyDictionary<string, double> Validation);

/// <summary>The sparse-mixture table of one seed.</summary>
/// <param name="Domains">Held-in then held-out domains.</param>
/// <param name="Rows">Pretrained, then every upcycled variant.</param>
/// <param name="Machine">The CPU and thread count.</param>
/// <param name="Quick">True for the CI-sized pool.</param>
/// <param name="Seed">The zoo's seed.</param>
/// <param name="Seconds">Wall time of the whole run.</param>
public sealed record TextMoeResult(IReadOnlyList<TextDomain> Domains, IReadOnlyList<TextMoeRow> Rows, string Machine, bool Quick, int Seed, double Seconds);

/// <summary>
/// Upcycled sparse mixtures on the text pool (issue 13, item 6): the text zoo's seven experts become the routed
/// experts of a Mixtral (no shared expert) or a DeepSeek-MoE (the pretrained model's MLP as an always-on shared
/// expert) through the mergekit-moe job, for each gate mode, then scored with top-1, top-2 and top-p routing.
/// Positive prompts (hidden, cheap_embed) are the first lines of each domain's training text; p is chosen on the
/// held-in domains' validation text.
/// </summary>
public static class TextMoeBenchmark
{
    /// <summary>The gate modes compared.</summary>
    public static readonly IReadOnlyList<GateMode> GateModesCompared = [GateMode.Hidden, GateMode.CheapEmbed, GateMode.Random];

    /// <summary>The p values top-p routing chooses among on validation text.</summary>
    public static readonly IReadOnlyList<double> PGrid = [0.5, 0.7, 0.9];

    /// <summary>Positive prompts per expert.</summary>
    public const int PromptLines = 4;

    /// <summary>
    /// With a shared expert, its output and the routed experts' are each scaled by this (residual_scale), so that
    /// the block is the mean of the pretrained MLP and the routed mixture rather than their sum.
    /// </summary>
    public const double SharedMix = 0.5;

    /// <summary>
    /// The first <paramref name="count"/> lines of at least 16 characters of a training text, each cut to at most
    /// <paramref name="maxBytes"/> UTF-8 bytes on a character boundary.
    /// </summary>
    public static IReadOnlyList<string> Prompts(byte[] train, int count, int maxBytes)
    {
        var lines = Encoding.UTF8.GetString(train).Split('\n').Select(l => l.Trim()).Where(l => l.Length >= 16);
        var result = new List<string>();
        foreach (var line in lines)
        {
            var sb = new StringBuilder();
            foreach (var r in line.EnumerateRunes())
            {
                if (Encoding.UTF8.GetByteCount(sb.ToString() + r) > maxBytes) break;
                sb.Append(r.ToString());
            }
            result.Add(sb.ToString());
            if (result.Count == count) break;
        }
        return result;
    }

    /// <summary>Runs the table for the first seed of <paramref name="o"/>; upcycled folders go under <paramref name="workFolder"/>.</summary>
    public static TextMoeResult Run(TextPoolOptions o, string workFolder)
    {
        var clock = Stopwatch.StartNew();
        var log = o.Log ?? (_ => { });
        o.Zoo.Validate();
        var zooSettings = o.Zoo with { Seed = o.Seeds[0] };
        var domains = TextPoolBenchmark.Domains(o);
        var data = TextPoolBenchmark.LoadData(o.DataRoot, domains, o.Zoo.Sizes, log);
        var zoo = TextZooBuilder.Build(zooSettings, data, Path.Combine(o.DataRoot, "textzoo"), log);
        var heldIn = domains.Where(d => !d.HeldOut).ToList();
        int ctx = zooSettings.Context;
        var rows = new List<TextMoeRow>();

        (IReadOnlyList<TextScore> Scores, double Tps, double Ept) Test(DecoderModel m)
        {
            using var stats = SparseMoe.Blocks(m).Count > 0 ? new RoutingStatistics(m) : null;
            var sw = Stopwatch.StartNew();
            var scores = domains.Select(d => TextScore.Of(m, data[d.Name].Test, ctx, o.EvalBatch)).ToList();
            double tps = scores.Sum(s => s.Bytes) / sw.Elapsed.TotalSeconds;
            return (scores, tps, stats?.MeanExpertsPerToken() ?? 0);
        }
        double Valid(DecoderModel m) => heldIn.Average(d => TextScore.Of(m, data[d.Name].Validation, ctx, o.EvalBatch).BitsPerByte);

        using (var pre = DecoderModelFolder.Load(zoo.BaseFolder))
        {
            var (s, tps, _) = Test(pre);
            rows.Add(new TextMoeRow("Pretrained (dense)", s, 0, tps, pre.ParameterCount, pre.ParameterCount, "-", new Dictionary<string, double>()));
            log(Line(rows[^1], heldIn.Count));
        }
        Directory.CreateDirectory(workFolder);
        foreach (var gate in GateModesCompared)
            foreach (bool shared in new[] { false, true })
            {
                var experts = zooSettings.Experts.Select(d => new UpcycleExpert(zoo.ExpertFolder(d),
                    gate.NeedsPrompts() ? Prompts(data[d].Train, PromptLines, ctx - 1) : [], [],
                    ResidualScale: shared ? SharedMix : null)).ToList();
                var spec = new UpcycleSpec(zoo.BaseFolder, experts,
                    shared ? [new UpcycleExpert(zoo.BaseFolder, [], [], ResidualScale: SharedMix)] : [],
                    gate, 2, null, shared ? UpcycleArchitecture.DeepseekMoe : UpcycleArchitecture.Mixtral, zooSettings.Seed);
                string folder = Path.Combine(workFolder, $"{gate.Name()}-{(shared ? "shared" : "routed")}");
                UpcycleJob.Run(spec, folder, overwrite: true);
                using var model = DecoderModelFolder.Load(folder);
                var validation = new Dictionary<string, double>();
                var policies = new List<RoutingPolicy> { new TopK(1), new TopK(2) };
                double best = double.PositiveInfinity;
                RoutingPolicy? bestP = null;
                foreach (var p in PGrid)
                {
                    var policy = new TopP(p);
                    SparseMoe.SetRouting(model, policy);
                    double v = Valid(model);
                    validation[policy.ToString()] = v;
                    if (v < best) { best = v; bestP = policy; }
                }
                policies.Add(bestP!);
                foreach (var policy in policies)
                {
                    SparseMoe.SetRouting(model, policy);
                    var (s, tps, ept) = Test(model);
                    long total = model.ParameterCount;
                    long active = total - SparseMoe.Blocks(model).Sum(b => b.parameters().Sum(p => p.numel()))
                                  + SparseMoe.Blocks(model).Sum(b => SparseMoe.ActiveParametersPerToken(b, ept));
                    string routing = policy is TopP ? "top-p" : policy.ToString();
                    rows.Add(new TextMoeRow($"{gate.Name()}, {routing}{(shared ? ", shared" : "")}", s, ept, tps, total, active,
                        policy.ToString(), policy is TopP ? validation : new Dictionary<string, double>()));
                    log(Line(rows[^1], heldIn.Count));
                }
            }
        return new TextMoeResult(domains, rows, TaskPoolBenchmark.MachineDescription(), o.Quick, zooSettings.Seed, clock.Elapsed.TotalSeconds);
    }

    static string Line(TextMoeRow r, int heldIn) => FormattableString.Invariant(
        $"{r.Method}: held-in {r.Scores.Take(heldIn).Average(s => s.BitsPerByte):F3} bpb, held-out {r.Scores.Skip(heldIn).DefaultIfEmpty(new TextScore(double.NaN, double.NaN, 0)).Average(s => s.BitsPerByte):F3} bpb, {r.ExpertsPerToken:F2} experts/token, {r.TokensPerSecond:F0} tokens/s");

    /// <summary>Held-in and held-out mean bits per byte of a row.</summary>
    public static (double HeldIn, double HeldOut) Averages(TextMoeResult r, TextMoeRow row)
    {
        var idx = Enumerable.Range(0, r.Domains.Count);
        double Mean(IEnumerable<int> js) => js.Select(j => row.Scores[j].BitsPerByte).DefaultIfEmpty(double.NaN).Average();
        return (Mean(idx.Where(j => !r.Domains[j].HeldOut)), Mean(idx.Where(j => r.Domains[j].HeldOut)));
    }

    /// <summary>The JSON report: settings, machine, and per row every domain's bits per byte and accuracy, the averages, experts per token, tokens/s, parameters and the routing choice.</summary>
    public static JsonObject ToJson(TextMoeResult r)
    {
        var rows = new JsonArray();
        foreach (var row in r.Rows)
        {
            var (hin, hout) = Averages(r, row);
            var perDomain = new JsonObject();
            for (int j = 0; j < r.Domains.Count; j++)
                perDomain[r.Domains[j].Name] = new JsonObject { ["bits_per_byte"] = row.Scores[j].BitsPerByte, ["next_byte_accuracy"] = row.Scores[j].Accuracy };
            var validation = new JsonObject();
            foreach (var (k, v) in row.Validation) validation[k] = v;
            rows.Add(new JsonObject
            {
                ["method"] = row.Method,
                ["routing"] = row.Chosen,
                ["domains"] = perDomain,
                ["average_held_in"] = hin,
                ["average_held_out"] = double.IsNaN(hout) ? null : hout,
                ["experts_per_token"] = row.ExpertsPerToken,
                ["tokens_per_second"] = row.TokensPerSecond,
                ["parameters"] = row.Parameters,
                ["active_parameters"] = row.ActiveParameters,
                ["validation_bits_per_byte"] = validation,
            });
        }
        return new JsonObject
        {
            ["benchmark"] = "textmoe",
            ["machine"] = r.Machine,
            ["quick"] = r.Quick,
            ["seed"] = r.Seed,
            ["seconds"] = r.Seconds,
            ["settings"] = new JsonObject
            {
                ["gate_modes"] = new JsonArray(GateModesCompared.Select(g => (JsonNode)g.Name()).ToArray()),
                ["top_p_grid"] = new JsonArray(PGrid.Select(p => (JsonNode)p).ToArray()),
                ["prompts"] = $"first {PromptLines} lines (>= 16 characters) of each domain's training text",
                ["shared_expert"] = $"the pretrained MLP, DeepSeek-MoE layout; shared and routed outputs each scaled by {SharedMix}",
                ["selection"] = "top-p's p with the lowest mean bits per byte on the held-in validation splits",
            },
            ["rows"] = rows,
        };
    }

    /// <summary>The Markdown table (bits per byte per domain, averages, experts per token, tokens/s, parameters).</summary>
    public static string ToMarkdown(TextMoeResult r)
    {
        var inv = CultureInfo.InvariantCulture;
        var sb = new StringBuilder();
        sb.Append("| method | routing | ").Append(string.Join(" | ", r.Domains.Select(d => d.HeldOut ? d.Name + " (out)" : d.Name)))
          .Append(" | held-in | held-out | experts/token | tokens/s | parameters (active) |\n");
        sb.Append("|---|---|").Append(string.Concat(Enumerable.Repeat("---:|", r.Domains.Count + 5))).Append('\n');
        foreach (var row in r.Rows)
        {
            var (hin, hout) = Averages(r, row);
            sb.Append("| ").Append(row.Method).Append(" | ").Append(row.Chosen).Append(" | ")
              .Append(string.Join(" | ", row.Scores.Select(s => s.BitsPerByte.ToString("F3", inv))))
              .Append(" | ").Append(hin.ToString("F3", inv)).Append(" | ").Append(double.IsNaN(hout) ? "-" : hout.ToString("F3", inv))
              .Append(" | ").Append(row.ExpertsPerToken.ToString("F2", inv)).Append(" | ").Append(row.TokensPerSecond.ToString("F0", inv))
              .Append(" | ").Append(row.Parameters.ToString("N0", inv)).Append(" (").Append(row.ActiveParameters.ToString("N0", inv)).Append(") |\n");
        }
        sb.Append('\n').Append(FormattableString.Invariant($"Machine: {r.Machine}; seed {r.Seed}; {r.Seconds / 60:F1} min.\n"));
        return sb.ToString();
    }
}
