using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using MergeDsl.Bench.Data;
using MergeDsl.Bench.TaskPool;

namespace MergeDsl.Bench.TextScale;

/// <summary>
/// Reads scale-study reports (results.json) back and summarises runs of different seeds: every summary cell as the mean
/// and sample standard deviation over seeds of each seed's own group mean, and the study's three comparisons paired by
/// seed (same zoo seed on both sides), so seeds can run as separate processes and still give one table with spreads.
/// </summary>
public static class TextScaleCombine
{
    /// <summary>
    /// Reads a results.json written by <see cref="TextScaleReports.WriteJson"/>. Throws <see cref="InvalidDataException"/>
    /// naming the file and the field at fault.
    /// </summary>
    public static TextScaleResult Read(string path)
    {
        var json = ReportJson.Open(path, "mergedsl textscale", "a scale-study report");
        var root = json.Root;
        JsonNode Field(JsonNode? node, string name, string where) => json.Field(node, name, where);
        static double Number(JsonNode node) =>
            node.GetValueKind() == JsonValueKind.Number ? (double)node : double.NaN;
        static List<string> Strings(JsonNode node) => node.AsArray().Select(x => (string)x!).ToList();
        static Dictionary<string, string> Texts(JsonNode node) => node.AsObject().ToDictionary(kv => kv.Key, kv => (string)kv.Value!);
        try
        {
            var points = Field(root, "points", "the report").AsArray().Select((p, i) =>
            {
                string where = $"point {i}";
                return new TextScalePoint((int)Field(p, "width", where), (long)Field(p, "parameters", where), (int)Field(p, "pretrain_steps", where),
                    (string)Field(p, "base", where)!, Strings(Field(p, "experts", where)), (string)Field(p, "method", where)!,
                    Number(Field(p, "held_in_bits_per_byte", where)), Number(Field(p, "held_out_bits_per_byte", where)),
                    Number(Field(p, "normalised_held_in", where)), Number(Field(p, "normalised_held_out", where)),
                    Number(Field(p, "held_out_vs_pretrained", where)), Texts(Field(p, "config", where)), (double)Field(p, "seconds", where));
            }).ToList();
            var zoos = Field(root, "zoos", "the report").AsArray().Select((z, i) =>
                new TextScaleZoo((int)Field(z, "width", $"zoo {i}"), (int)Field(z, "pretrain_steps", $"zoo {i}"), (long)Field(z, "parameters", $"zoo {i}"),
                    (string?)z!["folder"] ?? "", (bool?)z["from_cache"] ?? false,
                    (z["train_seconds"]?.AsObject() ?? []).ToDictionary(kv => kv.Key, kv => (double)kv.Value!))).ToList();
            var stages = Field(root, "stage_seconds", "the report").AsArray()
                .Select(s => ((string)s!["stage"]!, (double)s["seconds"]!)).ToList();
            return new TextScaleResult(points, zoos, Strings(Field(root, "expert_order", "the report")), Strings(Field(root, "held_out", "the report")),
                (string?)root["machine"] ?? "", (bool?)root["quick"] ?? false, (int)Field(root, "seed", "the report"),
                Texts(Field(root, "settings", "the report")), stages);
        }
        catch (Exception e) when (e is InvalidOperationException or FormatException or NullReferenceException)
        {
            throw json.Invalid($"malformed field ({e.Message})");
        }
    }

    /// <summary>
    /// The runs of <paramref name="parts"/>, in the order given, after refusing (one line naming the part) runs that would
    /// not make one table: quick and full runs mixed, other settings than the seed, other configurations (widths, bases,
    /// expert counts, rows), or a repeated seed.
    /// </summary>
    public static IReadOnlyList<TextScaleResult> Check(IReadOnlyList<(string Name, TextScaleResult Result)> parts)
    {
        if (parts.Count < 2) throw new ArgumentException("--combine: give at least two reports (runs of different seeds)");
        var (firstName, first) = parts[0];
        static IEnumerable<KeyValuePair<string, string>> Comparable(IReadOnlyDictionary<string, string> s) =>
            s.Where(kv => kv.Key != "seed").OrderBy(kv => kv.Key, StringComparer.Ordinal);
        static List<string> Configurations(TextScaleResult r) =>
            r.Points.Select(p => $"{p.Width}/{p.PretrainSteps}/{p.Experts.Count}/{p.Method}").ToList();
        var seen = new HashSet<int>();
        foreach (var (name, r) in parts)
        {
            if (r.Quick != first.Quick) throw new ArgumentException($"--combine: {name} is {(r.Quick ? "a --quick" : "a full")} run, {firstName} is not");
            if (!Comparable(r.Settings).SequenceEqual(Comparable(first.Settings)))
                throw new ArgumentException($"--combine: {name} was run with other settings than {firstName} (zoo, widths, bases, expert counts or selection)");
            if (!Configurations(r).SequenceEqual(Configurations(first)))
                throw new ArgumentException($"--combine: {name} has other configurations or rows than {firstName}");
            if (!seen.Add(r.Seed)) throw new ArgumentException($"--combine: seed {r.Seed} appears twice ({name})");
        }
        return parts.Select(p => p.Result).ToList();
    }

    /// <summary>
    /// Every run's points in one result, for the plots: each seed holds the same configurations, so a group's mean over
    /// the pooled points is the mean over seeds of the seeds' group means.
    /// </summary>
    public static TextScaleResult Pooled(IReadOnlyList<TextScaleResult> runs) =>
        runs[0] with { Points = runs.SelectMany(r => r.Points).ToList() };

    /// <summary>Each seed's group means of <paramref name="value"/> for one row on one axis: [seed][group].</summary>
    static IReadOnlyList<IReadOnlyList<double>> PerSeed(IReadOnlyList<TextScaleResult> runs, string method, TextScaleReports.Axis axis,
        Func<TextScalePoint, double> value) =>
        runs.Select(r => TextScaleReports.Summary(r, method, axis, value)).ToList();

    /// <summary>Mean and sample standard deviation over seeds of one group's seed means.</summary>
    public static (double Mean, double Std) Cell(IReadOnlyList<TextScaleResult> runs, string method, TextScaleReports.Axis axis,
        Func<TextScalePoint, double> value, int group) =>
        SeedStatistics.MeanStd(PerSeed(runs, method, axis, value).Select(s => s[group]).ToList());

    /// <summary>
    /// The last group minus the first on <paramref name="axis"/>, per seed (strong − weak base, widest − narrowest,
    /// most − fewest experts), as mean and sample standard deviation over seeds, with the per-seed differences.
    /// </summary>
    public static (double Mean, double Std, IReadOnlyList<double> PerSeed) Paired(IReadOnlyList<TextScaleResult> runs, string method,
        TextScaleReports.Axis axis, Func<TextScalePoint, double> value)
    {
        var diffs = PerSeed(runs, method, axis, value).Select(s => s[^1] - s[0]).ToList();
        var (mean, std) = SeedStatistics.MeanStd(diffs);
        return (mean, std, diffs);
    }

    static string F(double x, string format = "F3") => double.IsFinite(x) ? x.ToString(format, CultureInfo.InvariantCulture) : "-";
    static string Signed(double x) => double.IsFinite(x) ? x.ToString("+0.000;−0.000;0.000", CultureInfo.InvariantCulture) : "-";

    static readonly (string Name, Func<TextScalePoint, double> Value)[] Metrics =
    [
        ("normalised held-in", p => p.NormalisedHeldIn),
        ("normalised held-out", p => p.NormalisedHeldOut),
        ("held-out vs base", p => p.HeldOutVsPretrained),
    ];

    static readonly (string Title, TextScaleReports.Axis Axis, string Over)[] Axes =
    [
        ("width", TextScaleReports.Axis.Width, "bases and expert counts"),
        ("base", TextScaleReports.Axis.Base, "widths and expert counts"),
        ("number of experts", TextScaleReports.Axis.Experts, "widths and bases"),
    ];

    /// <summary>The combined Markdown report: summaries as mean ± std over seeds, the paired comparisons, run times.</summary>
    public static string Markdown(IReadOnlyList<TextScaleResult> runs)
    {
        var sb = new StringBuilder();
        var first = runs[0];
        var methods = first.Methods;
        sb.AppendLine($"# Text pool: merging at scale, {runs.Count} seeds{(first.Quick ? " (--quick)" : "")}");
        sb.AppendLine();
        sb.AppendLine($"Machine: {first.Machine}. Seeds {string.Join(", ", runs.Select(r => r.Seed))}, each run on its own and combined with `--combine`.");
        foreach (var r in runs)
            sb.AppendLine($"Seed {r.Seed}: experts merged are the first k of {string.Join(", ", r.ExpertOrder)}; run time {r.TotalSeconds / 60:F1} min.");
        sb.AppendLine($"Held-out domains: {string.Join(", ", first.HeldOut)}. Every cell: mean ± sample standard deviation over seeds of the seed's own mean over the configurations named; normalised scores are ratios of bits per byte, 1 is the reference's quality, higher is better.");
        sb.AppendLine();
        foreach (var (title, axis, over) in Axes)
            foreach (var (metric, value) in Metrics)
            {
                if (metric == "held-out vs base" && axis != TextScaleReports.Axis.Experts) continue;
                var groups = TextScaleReports.Groups(first, axis);
                sb.AppendLine($"## {char.ToUpperInvariant(metric[0])}{metric[1..]} by {title} (mean over {over})");
                sb.AppendLine();
                sb.AppendLine($"| Method | {string.Join(" | ", groups)} |");
                sb.AppendLine($"|---|{string.Concat(groups.Select(_ => "---:|"))}");
                foreach (var m in methods)
                    sb.AppendLine($"| {m} | {string.Join(" | ", groups.Select((_, g) => Cell(runs, m, axis, value, g)).Select(c => $"{F(c.Mean)} ± {F(c.Std)}"))} |");
                sb.AppendLine();
            }
        sb.AppendLine("## The study's comparisons, paired by seed");
        sb.AppendLine();
        sb.AppendLine("Per seed, the last group minus the first (same zoo seed on both sides); mean ± sample standard deviation over seeds, then each seed's difference.");
        sb.AppendLine();
        sb.AppendLine("| Comparison | Metric | Method | Difference | Per seed |");
        sb.AppendLine("|---|---|---|---:|---|");
        foreach (var (title, axis, _) in Axes)
        {
            var groups = TextScaleReports.Groups(first, axis);
            if (groups.Count < 2) continue;
            string label = $"{title}: {groups[^1]} − {groups[0]}";
            foreach (var (metric, value) in Metrics.Take(2))
                foreach (var m in methods.Where(m => m != "Individual"))
                {
                    var (mean, std, perSeed) = Paired(runs, m, axis, value);
                    sb.AppendLine($"| {label} | {metric} | {m} | {Signed(mean)} ± {F(std)} | {string.Join(", ", perSeed.Select(Signed))} |");
                }
        }
        return sb.ToString();
    }

    /// <summary>Writes the combined summaries as JSON: per axis, metric, row and group the mean, the std and every seed's value.</summary>
    public static void WriteJson(IReadOnlyList<TextScaleResult> runs, string path)
    {
        var first = runs[0];
        var summaries = new JsonObject();
        foreach (var (title, axis, _) in Axes)
        {
            var groups = TextScaleReports.Groups(first, axis);
            var byMetric = new JsonObject();
            foreach (var (metric, value) in Metrics)
            {
                var byMethod = new JsonObject();
                foreach (var m in first.Methods)
                {
                    var perSeed = PerSeed(runs, m, axis, value);
                    var byGroup = new JsonObject();
                    for (int g = 0; g < groups.Count; g++)
                    {
                        var (mean, std) = SeedStatistics.MeanStd(perSeed.Select(s => s[g]).ToList());
                        byGroup[groups[g]] = new JsonObject
                        {
                            ["mean"] = Math.Round(mean, 5), ["std"] = Math.Round(std, 5),
                            ["per_seed"] = new JsonArray(perSeed.Select(s => (JsonNode)JsonValue.Create(Math.Round(s[g], 5))).ToArray()),
                        };
                    }
                    byMethod[m] = byGroup;
                }
                byMetric[metric] = byMethod;
            }
            summaries[title] = byMetric;
        }
        var root = new JsonObject
        {
            ["benchmark"] = "mergedsl textscale, combined",
            ["quick"] = first.Quick,
            ["machine"] = first.Machine,
            ["seeds"] = new JsonArray(runs.Select(r => (JsonNode)JsonValue.Create(r.Seed)).ToArray()),
            ["expert_orders"] = new JsonObject(runs.Select(r => KeyValuePair.Create($"{r.Seed}", (JsonNode?)new JsonArray(r.ExpertOrder.Select(e => (JsonNode)JsonValue.Create(e)).ToArray())))),
            ["settings"] = JsonSerializer.SerializeToNode(first.Settings.Where(kv => kv.Key != "seed").ToDictionary()),
            ["summaries"] = summaries,
            ["run_seconds"] = new JsonObject(runs.Select(r => KeyValuePair.Create($"{r.Seed}", (JsonNode?)JsonValue.Create(Math.Round(r.TotalSeconds, 1))))),
        };
        File.WriteAllText(path, root.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
    }
}
