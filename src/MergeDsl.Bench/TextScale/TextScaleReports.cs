using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace MergeDsl.Bench.TextScale;

/// <summary>
/// The scale study's reports: JSON (every point, the zoos, the settings), and Markdown with one table per zoo and the
/// three summaries the study's questions read (by width, by base, by expert count).
/// </summary>
public static class TextScaleReports
{
    /// <summary>A summary axis: what the points are grouped by.</summary>
    public enum Axis
    {
        /// <summary>Model width (over bases and expert counts).</summary>
        Width,
        /// <summary>Weak or strong base (over widths and expert counts).</summary>
        Base,
        /// <summary>Number of merged experts (over widths and bases).</summary>
        Experts,
    }

    /// <summary>The groups of <paramref name="axis"/>, in run order, as labels.</summary>
    public static IReadOnlyList<string> Groups(TextScaleResult r, Axis axis) =>
        r.Points.Select(p => Label(p, axis)).Distinct().ToList();

    /// <summary>The group label of a point on an axis.</summary>
    public static string Label(TextScalePoint p, Axis axis) => axis switch
    {
        Axis.Width => $"{p.Width}",
        Axis.Base => p.Base,
        _ => $"{p.Experts.Count}",
    };

    /// <summary>
    /// Mean of <paramref name="value"/> over the points of <paramref name="method"/> in each group of <paramref name="axis"/>
    /// (optionally only points passing <paramref name="filter"/>); NaN for an empty group.
    /// </summary>
    public static IReadOnlyList<double> Summary(TextScaleResult r, string method, Axis axis, Func<TextScalePoint, double> value,
        Func<TextScalePoint, bool>? filter = null) =>
        Groups(r, axis).Select(g =>
        {
            var xs = r.Points.Where(p => p.Method == method && Label(p, axis) == g && (filter?.Invoke(p) ?? true)).Select(value).ToList();
            return xs.Count == 0 ? double.NaN : xs.Average();
        }).ToList();

    static string F(double x, string format = "F3") => double.IsFinite(x) ? x.ToString(format, CultureInfo.InvariantCulture) : "-";

    /// <summary>Writes every point, zoo and setting as JSON.</summary>
    public static void WriteJson(TextScaleResult r, string path)
    {
        static JsonNode Num(double v) => double.IsFinite(v) ? JsonValue.Create(Math.Round(v, 5)) : JsonValue.Create("NaN");
        var root = new JsonObject
        {
            ["benchmark"] = "mergedsl textscale",
            ["quick"] = r.Quick,
            ["machine"] = r.Machine,
            ["seed"] = r.Seed,
            ["expert_order"] = new JsonArray(r.ExpertOrder.Select(e => (JsonNode)JsonValue.Create(e)).ToArray()),
            ["held_out"] = new JsonArray(r.HeldOut.Select(e => (JsonNode)JsonValue.Create(e)).ToArray()),
            ["settings"] = JsonSerializer.SerializeToNode(r.Settings),
            ["zoos"] = new JsonArray(r.Zoos.Select(z => (JsonNode)new JsonObject
            {
                ["width"] = z.Width, ["pretrain_steps"] = z.PretrainSteps, ["parameters"] = z.Parameters, ["folder"] = z.Folder,
                ["from_cache"] = z.FromCache, ["train_seconds"] = JsonSerializer.SerializeToNode(z.TrainSeconds),
            }).ToArray()),
            ["points"] = new JsonArray(r.Points.Select(p => (JsonNode)new JsonObject
            {
                ["width"] = p.Width, ["parameters"] = p.Parameters, ["pretrain_steps"] = p.PretrainSteps, ["base"] = p.Base,
                ["experts"] = new JsonArray(p.Experts.Select(e => (JsonNode)JsonValue.Create(e)).ToArray()),
                ["method"] = p.Method,
                ["held_in_bits_per_byte"] = Num(p.HeldIn), ["held_out_bits_per_byte"] = Num(p.HeldOut),
                ["normalised_held_in"] = Num(p.NormalisedHeldIn), ["normalised_held_out"] = Num(p.NormalisedHeldOut),
                ["held_out_vs_pretrained"] = Num(p.HeldOutVsPretrained),
                ["config"] = JsonSerializer.SerializeToNode(p.Chosen), ["seconds"] = Math.Round(p.Seconds, 2),
            }).ToArray()),
            ["stage_seconds"] = new JsonArray(r.Stages.Select(s => (JsonNode)new JsonObject { ["stage"] = s.Stage, ["seconds"] = Math.Round(s.Seconds, 2) }).ToArray()),
            ["total_seconds"] = Math.Round(r.TotalSeconds, 2),
        };
        File.WriteAllText(path, root.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
    }

    /// <summary>Writes the summaries and the per-zoo tables as Markdown.</summary>
    public static void WriteMarkdown(TextScaleResult r, string path) => File.WriteAllText(path, Markdown(r));

    /// <summary>The Markdown report.</summary>
    public static string Markdown(TextScaleResult r)
    {
        var sb = new StringBuilder();
        var methods = r.Methods;
        sb.AppendLine($"# Text pool: merging at scale{(r.Quick ? " (--quick)" : "")}");
        sb.AppendLine();
        sb.AppendLine($"Machine: {r.Machine}. Seed {r.Seed}. Total {r.TotalSeconds / 60:F1} min.");
        sb.AppendLine($"Experts merged: the first k of {string.Join(", ", r.ExpertOrder)}; held-out domains: {string.Join(", ", r.HeldOut)}.");
        sb.AppendLine("Normalised scores are ratios of bits per byte: held-in = expert / row on each merged domain, held-out = best merged expert (chosen on validation) / row, held-out vs base = base / row; 1 is the reference's quality, higher is better.");
        sb.AppendLine();
        void Section(string title, Axis axis, Func<TextScalePoint, double> value, Func<TextScalePoint, bool>? filter = null)
        {
            var groups = Groups(r, axis);
            sb.AppendLine($"## {title}");
            sb.AppendLine();
            sb.AppendLine($"| Method | {string.Join(" | ", groups)} |");
            sb.AppendLine($"|---|{string.Concat(groups.Select(_ => "---:|"))}");
            foreach (var m in methods)
                sb.AppendLine($"| {m} | {string.Join(" | ", Summary(r, m, axis, value, filter).Select(x => F(x)))} |");
            sb.AppendLine();
        }
        Section("Normalised held-in by width (mean over bases and expert counts)", Axis.Width, p => p.NormalisedHeldIn);
        Section("Normalised held-out by width (mean over bases and expert counts)", Axis.Width, p => p.NormalisedHeldOut);
        Section("Normalised held-in by base (mean over widths and expert counts)", Axis.Base, p => p.NormalisedHeldIn);
        Section("Normalised held-out by base (mean over widths and expert counts)", Axis.Base, p => p.NormalisedHeldOut);
        Section("Normalised held-in by number of experts (mean over widths and bases)", Axis.Experts, p => p.NormalisedHeldIn);
        Section("Normalised held-out by number of experts (mean over widths and bases)", Axis.Experts, p => p.NormalisedHeldOut);
        Section("Held-out vs base by number of experts (mean over widths and bases)", Axis.Experts, p => p.HeldOutVsPretrained);
        sb.AppendLine("## Every configuration");
        sb.AppendLine();
        sb.AppendLine("| Width (parameters) | Base (steps) | k | Method | Held-in bpb | Held-out bpb | Norm. held-in | Norm. held-out | Held-out vs base | Chosen |");
        sb.AppendLine("|---|---|---:|---|---:|---:|---:|---:|---:|---|");
        foreach (var p in r.Points)
        {
            var chosen = string.Join(", ", p.Chosen.Where(kv => kv.Key is "lambda" or "density" or "lr" || kv.Key.StartsWith("expert for", StringComparison.Ordinal))
                .Select(kv => $"{kv.Key}={kv.Value}"));
            sb.AppendLine($"| {p.Width} ({p.Parameters:N0}) | {p.Base} ({p.PretrainSteps}) | {p.Experts.Count} | {p.Method} | {F(p.HeldIn)} | {F(p.HeldOut)} | {F(p.NormalisedHeldIn)} | {F(p.NormalisedHeldOut)} | {F(p.HeldOutVsPretrained)} | {chosen} |");
        }
        sb.AppendLine();
        sb.AppendLine("## Stage times");
        sb.AppendLine();
        sb.AppendLine("| Stage | Seconds |");
        sb.AppendLine("|---|---:|");
        foreach (var (stage, s) in r.Stages) sb.AppendLine($"| {stage} | {s:F1} |");
        foreach (var z in r.Zoos.Where(z => !z.FromCache))
            sb.AppendLine($"\nZoo width {z.Width}, {z.PretrainSteps} pretraining steps trained in this run: {z.TrainSeconds.Values.Sum():F0} s.");
        return sb.ToString();
    }
}
