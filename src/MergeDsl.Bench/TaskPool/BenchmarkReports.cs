using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace MergeDsl.Bench.TaskPool;

/// <summary>Writes a benchmark result as FusionBench-shaped JSON and as a Markdown table.</summary>
public static class BenchmarkReports
{
    /// <summary>The paper's numbers (WEMoE, Tang et al. 2024, CLIP ViT-B/32, 8 tasks, average accuracy %).</summary>
    public static readonly IReadOnlyDictionary<string, double> PaperViTB32 = new Dictionary<string, double>
    {
        ["Pretrained"] = 48.0, ["Simple Average"] = 65.8, ["Task Arithmetic"] = 69.1, ["TIES-Merging"] = 72.4,
        ["AdaMerging (layer-wise)"] = 80.1, ["WEMoE"] = 89.4, ["Individual"] = 90.5,
    };

    static string F(double v) => v.ToString("F1", CultureInfo.InvariantCulture);

    /// <summary>
    /// FusionBench's report shape per method (<c>{"&lt;task&gt;": {"accuracy": a}, ..., "average": {"accuracy": a}}</c>,
    /// accuracies as fractions), plus the run's settings, machine and stage times.
    /// </summary>
    public static JsonObject ToJson(BenchmarkResult r)
    {
        var methods = new JsonObject();
        foreach (var m in r.Methods)
        {
            var report = new JsonObject();
            for (int i = 0; i < r.Tasks.Count; i++)
                report[r.Tasks[i]] = new JsonObject { ["accuracy"] = Math.Round(m.Accuracy[i] / 100.0, 6) };
            report["average"] = new JsonObject { ["accuracy"] = Math.Round(m.Average / 100.0, 6) };
            var config = new JsonObject();
            foreach (var (k, v) in m.Config) config[k] = v;
            methods[m.Method] = new JsonObject
            {
                ["config"] = config, ["report"] = report,
                ["seconds"] = Math.Round(m.Seconds, 2), ["notes"] = m.Notes,
            };
        }
        var stages = new JsonObject();
        foreach (var (s, sec) in r.Stages) stages[s] = Math.Round(sec, 2);
        var settings = new JsonObject();
        foreach (var (k, v) in r.Settings) settings[k] = v;
        return new JsonObject
        {
            ["benchmark"] = "mergedsl bench taskpool",
            ["quick"] = r.Quick,
            ["machine"] = r.Machine,
            ["tasks"] = new JsonArray(r.Tasks.Select(t => (JsonNode)t).ToArray()),
            ["model_pool"] = r.ZooFolder,
            ["model_pool_from_cache"] = r.ZooFromCache,
            ["settings"] = settings,
            ["stage_seconds"] = stages,
            ["total_seconds"] = Math.Round(r.TotalSeconds, 2),
            ["methods"] = methods,
            ["targets"] = Targets(r).ToJsonNode(),
        };
    }

    /// <summary>The issue's measurable targets evaluated on a result.</summary>
    /// <param name="GapRecovered">WEMoE's fraction of the TA-to-Individual gap.</param>
    /// <param name="OracleGap">Oracle routing minus WEMoE, points.</param>
    /// <param name="OrderingHolds">Whether the paper's ordering holds.</param>
    /// <param name="Ordering">The ordering, spelled out.</param>
    /// <param name="TotalMinutes">Wall time of the run.</param>
    /// <param name="DistilledGapRecovered">The same fraction for WEMoE with expert distillation.</param>
    /// <param name="DistilledOracleGap">Oracle routing minus WEMoE with expert distillation.</param>
    public sealed record TargetCheck(double GapRecovered, double OracleGap, bool OrderingHolds, string Ordering, double TotalMinutes,
        double DistilledGapRecovered, double DistilledOracleGap)
    {
        /// <summary>As JSON.</summary>
        public JsonNode ToJsonNode() => new JsonObject
        {
            ["wemoe_fraction_of_ta_to_individual_gap"] = Number(GapRecovered, 4),
            ["oracle_minus_wemoe_points"] = Number(OracleGap, 2),
            ["wemoe_expert_distillation_fraction_of_ta_to_individual_gap"] = Number(DistilledGapRecovered, 4),
            ["oracle_minus_wemoe_expert_distillation_points"] = Number(DistilledOracleGap, 2),
            ["ordering"] = Ordering,
            ["ordering_holds"] = OrderingHolds,
            ["total_minutes"] = Number(TotalMinutes, 2),
        };

        // A run of a subset of methods (--methods) has no value for a target it lacks: JSON null, not NaN.
        static JsonNode? Number(double v, int digits) => double.IsFinite(v) ? JsonValue.Create(Math.Round(v, digits)) : null;
    }

    /// <summary>Gap recovery, distance to the oracle, the paper's ordering, total minutes.</summary>
    public static TargetCheck Targets(BenchmarkResult r)
    {
        double A(string m) => r.Find(m)?.Average ?? double.NaN;
        double ta = A("Task Arithmetic"), ind = A("Individual"), we = A("WEMoE");
        var chain = new[] { "Simple Average", "Task Arithmetic", "TIES-Merging", "AdaMerging (layer-wise)", "WEMoE" };
        var parts = new List<string>();
        bool holds = true;
        for (int i = 0; i < chain.Length; i++)
        {
            parts.Add($"{chain[i]} {F(A(chain[i]))}");
            if (i + 1 < chain.Length)
            {
                bool ok = A(chain[i]) < A(chain[i + 1]);
                holds &= ok;
                parts.Add(ok ? "<" : ">=");
            }
        }
        bool last = we <= ind + 1e-9;
        holds &= last;
        parts.Add(last ? "<=" : ">");
        parts.Add($"Individual {F(ind)}");
        double kd = A("WEMoE (expert distillation)");
        return new TargetCheck((we - ta) / (ind - ta), A("Oracle routing") - we, holds, string.Join(" ", parts), r.TotalSeconds / 60.0,
            (kd - ta) / (ind - ta), A("Oracle routing") - kd);
    }

    /// <summary>Writes results.json.</summary>
    public static void WriteJson(BenchmarkResult r, string path) =>
        File.WriteAllText(path, ToJson(r).ToJsonString(new JsonSerializerOptions { WriteIndented = true }));

    /// <summary>The Markdown table (methods x tasks + average), stage times and targets.</summary>
    public static string ToMarkdown(BenchmarkResult r)
    {
        var sb = new StringBuilder();
        sb.AppendLine($"| Method | {string.Join(" | ", r.Tasks)} | **Avg.** | time (s) |");
        sb.AppendLine($"|---|{string.Concat(r.Tasks.Select(_ => "---:|"))}---:|---:|");
        foreach (var m in r.Methods)
            sb.AppendLine($"| {m.Method} | {string.Join(" | ", m.Accuracy.Select(F))} | **{F(m.Average)}** | {m.Seconds:F1} |");
        sb.AppendLine();
        sb.Append(StageTable(r.Stages));
        sb.AppendLine();
        var t = Targets(r);
        sb.AppendLine($"- WEMoE recovers {t.GapRecovered * 100:F1}% of the gap between Task Arithmetic and Individual.");
        sb.AppendLine($"- Oracle routing minus WEMoE: {t.OracleGap:F1} points.");
        sb.AppendLine($"- WEMoE with expert distillation: {t.DistilledGapRecovered * 100:F1}% of the gap, {t.DistilledOracleGap:F1} points below oracle routing.");
        sb.AppendLine($"- Ordering: {t.Ordering} ({(t.OrderingHolds ? "holds" : "does not hold")}).");
        sb.AppendLine($"- Total wall time: {t.TotalMinutes:F1} min on {r.Machine}.");
        var notes = r.Methods.Where(m => m.Notes.Length > 0).ToList();
        if (notes.Count > 0)
        {
            sb.AppendLine();
            foreach (var m in notes) sb.AppendLine($"- {m.Method}: {m.Notes}.");
        }
        return sb.ToString();
    }

    /// <summary>A Markdown table of stage wall times with their total.</summary>
    public static string StageTable(IReadOnlyList<(string Stage, double Seconds)> stages)
    {
        var sb = new StringBuilder();
        sb.AppendLine("| Stage | seconds |");
        sb.AppendLine("|---|---:|");
        foreach (var (s, sec) in stages) sb.AppendLine(FormattableString.Invariant($"| {s} | {sec:F1} |"));
        sb.AppendLine(FormattableString.Invariant($"| **total** | **{stages.Sum(s => s.Seconds):F1}** |"));
        return sb.ToString();
    }

    /// <summary>Writes results.md.</summary>
    public static void WriteMarkdown(BenchmarkResult r, string path) => File.WriteAllText(path, ToMarkdown(r));
}
