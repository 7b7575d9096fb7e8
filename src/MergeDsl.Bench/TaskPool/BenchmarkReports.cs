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

    static JsonObject Report(IReadOnlyList<string> tasks, IReadOnlyList<MethodResult> rows)
    {
        var report = new JsonObject();
        JsonObject Cell(IReadOnlyList<double> xs)
        {
            var (mean, std) = SeedStatistics.MeanStd(xs);
            return new JsonObject { ["accuracy"] = Math.Round(mean / 100.0, 6), ["accuracy_std"] = Math.Round(std / 100.0, 6) };
        }
        for (int i = 0; i < tasks.Count; i++) report[tasks[i]] = Cell(rows.Select(r => r.Accuracy[i]).ToList());
        report["average"] = Cell(rows.Select(r => r.Average).ToList());
        return report;
    }

    static JsonObject Object(IReadOnlyDictionary<string, string> d)
    {
        var o = new JsonObject();
        foreach (var (k, v) in d) o[k] = v;
        return o;
    }

    /// <summary>
    /// FusionBench's report shape per method (<c>{"&lt;task&gt;": {"accuracy": a, "accuracy_std": s}, ..., "average": {...}}</c>,
    /// accuracies as fractions, means over seeds with their sample standard deviations), each seed's chosen settings,
    /// validation accuracies and report, plus the run's settings, machine (CPU named) and stage times.
    /// </summary>
    public static JsonObject ToJson(BenchmarkResult r)
    {
        var methods = new JsonObject();
        foreach (var m in r.Methods)
        {
            var perSeed = new JsonArray();
            foreach (var run in r.Runs)
            {
                var row = run.Find(m.Method)!;
                var validation = new JsonObject();
                foreach (var (k, v) in row.Validation) validation[k] = Math.Round(v / 100.0, 6);
                perSeed.Add(new JsonObject
                {
                    ["seed"] = run.Seed, ["config"] = Object(row.Config), ["validation_accuracy"] = validation,
                    ["report"] = Report(r.Tasks, [row]), ["seconds"] = Math.Round(row.Seconds, 2), ["notes"] = row.Notes,
                });
            }
            methods[m.Method] = new JsonObject
            {
                ["config"] = Object(m.Config),
                ["report"] = Report(r.Tasks, r.Runs.Select(run => run.Find(m.Method)!).ToList()),
                ["seconds"] = Math.Round(m.Seconds, 2),
                ["per_seed"] = perSeed,
            };
        }
        var settings = Object(r.Settings);
        return new JsonObject
        {
            ["benchmark"] = "mergedsl bench taskpool",
            ["quick"] = r.Quick,
            ["machine"] = r.Machine,
            ["seeds"] = new JsonArray(r.Runs.Select(x => (JsonNode)x.Seed).ToArray()),
            ["tasks"] = new JsonArray(r.Tasks.Select(t => (JsonNode)t).ToArray()),
            ["model_pool"] = new JsonArray(r.Runs.Select(x => (JsonNode)new JsonObject
            {
                ["seed"] = x.Seed, ["folder"] = x.ZooFolder, ["from_cache"] = x.ZooFromCache,
                ["train_seconds"] = JsonSerializer.SerializeToNode(x.ZooTrainSeconds),
            }).ToArray()),
            ["settings"] = settings,
            ["stage_seconds"] = new JsonArray(r.Runs.Select(x => (JsonNode)new JsonObject
            {
                ["seed"] = x.Seed,
                ["stages"] = JsonSerializer.SerializeToNode(x.Stages.Select(s => new { stage = s.Stage, seconds = Math.Round(s.Seconds, 2) })),
            }).ToArray()),
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
    /// <param name="TotalMinutes">Sum of every seed's stage times (the wall time of a run whose seeds ran one after another).</param>
    /// <param name="DistilledGapRecovered">The same fraction for WEMoE with expert distillation.</param>
    /// <param name="DistilledOracleGap">Oracle routing minus WEMoE with expert distillation.</param>
    /// <param name="OrderingMeasured">Whether the run had every row of the ordering (a run of some methods may not).</param>
    public sealed record TargetCheck(double GapRecovered, double OracleGap, bool OrderingHolds, string Ordering, double TotalMinutes,
        double DistilledGapRecovered, double DistilledOracleGap, bool OrderingMeasured)
    {
        /// <summary>As JSON.</summary>
        public JsonNode ToJsonNode() => new JsonObject
        {
            ["wemoe_fraction_of_ta_to_individual_gap"] = Number(GapRecovered, 4),
            ["oracle_minus_wemoe_points"] = Number(OracleGap, 2),
            ["wemoe_expert_distillation_fraction_of_ta_to_individual_gap"] = Number(DistilledGapRecovered, 4),
            ["oracle_minus_wemoe_expert_distillation_points"] = Number(DistilledOracleGap, 2),
            ["ordering"] = OrderingMeasured ? Ordering : null,
            ["ordering_holds"] = OrderingMeasured ? OrderingHolds : null,
            ["total_minutes"] = Number(TotalMinutes, 2),
        };

        /// <summary>The targets as Markdown bullets, leaving out those a run of some methods could not measure.</summary>
        public IEnumerable<string> Lines()
        {
            if (double.IsFinite(GapRecovered)) yield return $"WEMoE recovers {GapRecovered * 100:F1}% of the gap between Task Arithmetic and Individual (means over seeds).";
            if (double.IsFinite(OracleGap)) yield return $"Oracle routing minus WEMoE: {OracleGap:F1} points.";
            if (double.IsFinite(DistilledGapRecovered))
                yield return $"WEMoE with expert distillation (ours): {DistilledGapRecovered * 100:F1}% of the gap, {DistilledOracleGap:F1} points below oracle routing.";
            if (OrderingMeasured) yield return $"Ordering: {Ordering} ({(OrderingHolds ? "holds" : "does not hold")}).";
        }

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
            (kd - ta) / (ind - ta), A("Oracle routing") - kd, chain.Append("Individual").All(m => double.IsFinite(A(m))));
    }

    /// <summary>Writes results.json.</summary>
    public static void WriteJson(BenchmarkResult r, string path) =>
        File.WriteAllText(path, ToJson(r).ToJsonString(new JsonSerializerOptions { WriteIndented = true }));

    static string Cell(IReadOnlyList<double> xs)
    {
        var (mean, std) = SeedStatistics.MeanStd(xs);
        return xs.Count > 1 ? $"{F(mean)} ± {F(std)}" : F(mean);
    }

    /// <summary>The Markdown report: test accuracy (mean ± sample standard deviation over seeds), settings chosen on validation, stage times, targets.</summary>
    public static string ToMarkdown(BenchmarkResult r)
    {
        var sb = new StringBuilder();
        var seeds = r.Runs.Count > 1
            ? $"mean ± sample standard deviation over {r.Runs.Count} seeds ({string.Join(", ", r.Runs.Select(x => x.Seed))})"
            : $"seed {r.Runs[0].Seed}";
        sb.AppendLine($"Test accuracy, %; {seeds}; on {Cpu(r)}.");
        sb.AppendLine();
        sb.AppendLine($"| Method | {string.Join(" | ", r.Tasks)} | **Avg.** | time (s) |");
        sb.AppendLine($"|---|{string.Concat(r.Tasks.Select(_ => "---:|"))}---:|---:|");
        foreach (var m in r.Methods)
        {
            var rows = r.Runs.Select(run => run.Find(m.Method)!).ToList();
            var cells = Enumerable.Range(0, r.Tasks.Count).Select(i => Cell(rows.Select(x => x.Accuracy[i]).ToList()));
            sb.AppendLine($"| {m.Method} | {string.Join(" | ", cells)} | **{Cell(rows.Select(x => x.Average).ToList())}** | {m.Seconds:F1} |");
        }
        sb.AppendLine();
        sb.AppendLine("Settings chosen on the validation images (mean validation accuracy of each setting tried):");
        sb.AppendLine();
        foreach (var m in r.Methods)
            foreach (var run in r.Runs)
            {
                var row = run.Find(m.Method)!;
                if (row.Validation.Count == 0) continue;
                var chosen = string.Join(", ", row.Config.Where(kv => kv.Key is "lambda" or "density" or "lr" or "steps" or "objective").Select(kv => $"{kv.Key}={kv.Value}"));
                sb.AppendLine($"- {m.Method}, seed {run.Seed}: {chosen} ({string.Join("; ", row.Validation.Select(kv => $"{kv.Key}: {F(kv.Value)}"))})");
            }
        sb.AppendLine();
        foreach (var run in r.Runs)
        {
            sb.AppendLine($"Stages, seed {run.Seed} (zoo {(run.ZooFromCache ? "from cache" : "trained in this run")}):");
            sb.AppendLine();
            sb.Append(StageTable(run.Stages));
            sb.AppendLine();
        }
        var t = Targets(r);
        foreach (var line in t.Lines()) sb.AppendLine($"- {line}");
        sb.AppendLine($"- Run time: {t.TotalMinutes:F1} min, the sum of every seed's stages (the wall time when the seeds run one after another), on {r.Machine}.");
        var notes = r.Methods.Where(m => m.Notes.Length > 0).ToList();
        if (notes.Count > 0)
        {
            sb.AppendLine();
            foreach (var m in notes) sb.AppendLine($"- {m.Method}: {m.Notes}.");
        }
        return sb.ToString();
    }

    static string Cpu(BenchmarkResult r) => r.Settings.TryGetValue("cpu", out var cpu) ? cpu : r.Machine;

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
