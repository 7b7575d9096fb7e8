using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using MergeDsl.Bench.TaskPool;

namespace MergeDsl.Bench.TextPool;

/// <summary>Writes a text-pool result as FusionBench-shaped JSON and as Markdown tables (mean ± spread over seeds).</summary>
public static class TextPoolReports
{
    /// <summary>A cell of the table: one column (a domain, or an average) of one row, over seeds.</summary>
    /// <param name="Name">Column name.</param>
    /// <param name="BitsPerByte">Per seed.</param>
    /// <param name="Accuracy">Next-byte accuracy per seed, as a fraction.</param>
    public sealed record Column(string Name, IReadOnlyList<double> BitsPerByte, IReadOnlyList<double> Accuracy);

    /// <summary>The average columns' names.</summary>
    public const string HeldInAverage = "average_held_in", HeldOutAverage = "average_held_out";

    /// <summary>A row's columns: every domain, then the held-in and held-out averages.</summary>
    public static IReadOnlyList<Column> Columns(TextPoolResult r, string method)
    {
        var rows = r.Runs.Select(run => run.Find(method)!).ToList();
        var domains = r.Domains;
        var cols = domains.Select((d, j) => new Column(d.Name, rows.Select(x => x.Scores[j].BitsPerByte).ToList(), rows.Select(x => x.Scores[j].Accuracy).ToList())).ToList();
        Column Avg(string name, bool heldOut)
        {
            var idx = domains.Select((d, j) => (d, j)).Where(p => p.d.HeldOut == heldOut).Select(p => p.j).ToList();
            return new Column(name, rows.Select(x => idx.Average(j => x.Scores[j].BitsPerByte)).ToList(), rows.Select(x => idx.Average(j => x.Scores[j].Accuracy)).ToList());
        }
        cols.Add(Avg(HeldInAverage, false));
        if (domains.Any(d => d.HeldOut)) cols.Add(Avg(HeldOutAverage, true));
        return cols;
    }

    static JsonNode Num(double v, int digits) => JsonValue.Create(Math.Round(v, digits));

    static JsonObject Report(IReadOnlyList<Column> cols)
    {
        var report = new JsonObject();
        foreach (var c in cols)
        {
            var (b, bs) = SeedStatistics.MeanStd(c.BitsPerByte);
            var (a, s) = SeedStatistics.MeanStd(c.Accuracy);
            report[c.Name] = new JsonObject
            {
                ["bits_per_byte"] = Num(b, 5), ["bits_per_byte_std"] = Num(bs, 5),
                ["next_byte_accuracy"] = Num(a, 5), ["next_byte_accuracy_std"] = Num(s, 5),
            };
        }
        return report;
    }

    /// <summary>
    /// FusionBench's report shape per method (<c>{"&lt;domain&gt;": {"bits_per_byte": b, "next_byte_accuracy": a, ...}, ...}</c>,
    /// means over seeds with their sample standard deviations), plus each seed's chosen settings, validation
    /// scores and report, the data, machine and stage times.
    /// </summary>
    public static JsonObject ToJson(TextPoolResult r)
    {
        var methods = new JsonObject();
        foreach (var m in r.Methods)
        {
            var perSeed = new JsonArray();
            foreach (var run in r.Runs)
            {
                var row = run.Find(m)!;
                var one = r with { Runs = [run] };
                perSeed.Add(new JsonObject
                {
                    ["seed"] = run.Seed,
                    ["config"] = JsonSerializer.SerializeToNode(row.Chosen),
                    ["validation_bits_per_byte_held_in"] = JsonSerializer.SerializeToNode(row.Validation.ToDictionary(kv => kv.Key, kv => Math.Round(kv.Value, 5))),
                    ["report"] = Report(Columns(one, m)),
                    ["seconds"] = Math.Round(row.Seconds, 2),
                    ["notes"] = row.Notes,
                });
            }
            methods[m] = new JsonObject
            {
                ["report"] = Report(Columns(r, m)),
                ["seconds"] = Math.Round(r.Runs.Average(run => run.Find(m)!.Seconds), 2),
                ["per_seed"] = perSeed,
            };
        }
        var settings = new JsonObject();
        foreach (var (k, v) in r.Settings) settings[k] = v;
        return new JsonObject
        {
            ["benchmark"] = "mergedsl bench textpool",
            ["quick"] = r.Quick,
            ["machine"] = r.Machine,
            ["seeds"] = new JsonArray(r.Runs.Select(x => (JsonNode)x.Seed).ToArray()),
            ["domains"] = new JsonObject
            {
                ["held_in"] = new JsonArray(r.Domains.Where(d => !d.HeldOut).Select(d => (JsonNode)d.Name).ToArray()),
                ["held_out"] = new JsonArray(r.Domains.Where(d => d.HeldOut).Select(d => (JsonNode)d.Name).ToArray()),
            },
            ["data"] = JsonSerializer.SerializeToNode(r.Data),
            ["model_pool"] = new JsonArray(r.Runs.Select(x => (JsonNode)new JsonObject
            {
                ["seed"] = x.Seed, ["folder"] = x.ZooFolder, ["from_cache"] = x.ZooFromCache,
                ["train_seconds"] = JsonSerializer.SerializeToNode(x.ZooTrainSeconds),
                ["expert_bits_per_byte"] = JsonSerializer.SerializeToNode(x.ExpertMatrix.Select(row => row.Select(v => double.IsNaN(v) ? (double?)null : Math.Round(v, 5)))),
            }).ToArray()),
            ["settings"] = settings,
            ["stage_seconds"] = new JsonArray(r.Runs.Select(x => (JsonNode)new JsonObject
            {
                ["seed"] = x.Seed,
                ["stages"] = JsonSerializer.SerializeToNode(x.Stages.Select(s => new { stage = s.Stage, seconds = Math.Round(s.Seconds, 2) })),
            }).ToArray()),
            ["total_seconds"] = Math.Round(r.TotalSeconds, 2),
            ["methods"] = methods,
        };
    }

    /// <summary>Writes results.json.</summary>
    public static void WriteJson(TextPoolResult r, string path) =>
        File.WriteAllText(path, ToJson(r).ToJsonString(new JsonSerializerOptions { WriteIndented = true }));

    static string Cell(IReadOnlyList<double> xs, double scale, string format)
    {
        var (m, s) = SeedStatistics.MeanStd(xs);
        var text = (m * scale).ToString(format, CultureInfo.InvariantCulture);
        return xs.Count > 1 ? text + " ± " + (s * scale).ToString(format, CultureInfo.InvariantCulture) : text;
    }

    static string Header(string name) => name switch { HeldInAverage => "**held-in avg.**", HeldOutAverage => "**held-out avg.**", _ => name };

    /// <summary>The Markdown report: bits-per-byte and accuracy tables, chosen settings, data sizes, stage times.</summary>
    public static string ToMarkdown(TextPoolResult r)
    {
        var sb = new StringBuilder();
        var heldIn = r.Domains.Where(d => !d.HeldOut).Select(d => d.Name).ToList();
        var heldOut = r.Domains.Where(d => d.HeldOut).Select(d => d.Name).ToList();
        var order = heldIn.Append(HeldInAverage).Concat(heldOut).Concat(heldOut.Count > 0 ? [HeldOutAverage] : []).ToList();
        string seeds = r.Runs.Count > 1 ? $"mean ± sample standard deviation over {r.Runs.Count} seeds ({string.Join(", ", r.Runs.Select(x => x.Seed))})" : $"seed {r.Runs[0].Seed}";
        foreach (var (title, bits) in new[] { ("Bits per byte on test text (lower is better)", true), ("Next-byte accuracy on test text, % (higher is better)", false) })
        {
            sb.AppendLine($"{title}; {seeds}; held-out: {string.Join(", ", heldOut)}.");
            sb.AppendLine();
            sb.AppendLine($"| Method | {string.Join(" | ", order.Select(Header))} |");
            sb.AppendLine($"|---|{string.Concat(order.Select(_ => "---:|"))}");
            foreach (var m in r.Methods)
            {
                var cols = Columns(r, m).ToDictionary(c => c.Name);
                sb.AppendLine($"| {m} | {string.Join(" | ", order.Select(c => bits ? Cell(cols[c].BitsPerByte, 1, "F3") : Cell(cols[c].Accuracy, 100, "F1")))} |");
            }
            sb.AppendLine();
        }
        sb.AppendLine("Settings chosen on the held-in validation text (per seed):");
        sb.AppendLine();
        foreach (var m in r.Methods)
        {
            var chosen = r.Runs.Select(run => run.Find(m)!).Where(x => x.Chosen.Count > 0 || x.Notes.Length > 0).ToList();
            if (chosen.Count == 0) continue;
            sb.AppendLine($"- {m}: {string.Join("; ", r.Runs.Select(run => $"seed {run.Seed}: {Describe(run.Find(m)!)}"))}");
        }
        sb.AppendLine();
        sb.AppendLine("| Domain | documents | train / validation / test documents | train / validation / test bytes | packages |");
        sb.AppendLine("|---|---:|---:|---:|---|");
        foreach (var d in r.Data)
            sb.AppendLine($"| {d.Domain} | {d.Documents} | {string.Join(" / ", d.DocumentsPerSplit)} | {string.Join(" / ", d.BytesPerSplit)} | {string.Join(", ", d.Packages.Select(p => $"{p.Key} {p.Value}"))} |");
        sb.AppendLine();
        foreach (var run in r.Runs)
        {
            sb.AppendLine($"Stages, seed {run.Seed} (zoo {(run.ZooFromCache ? "from cache" : "trained in this run")}; zoo training when built: {string.Join(", ", run.ZooTrainSeconds.Select(kv => FormattableString.Invariant($"{kv.Key} {kv.Value:F0} s")))}):");
            sb.AppendLine();
            sb.Append(BenchmarkReports.StageTable(run.Stages));
            sb.AppendLine();
        }
        sb.AppendLine(FormattableString.Invariant($"Total wall time {r.TotalSeconds / 60:F1} min on {r.Machine}."));
        return sb.ToString();
    }

    static string Describe(TextRowResult row)
    {
        var parts = row.Chosen.Select(kv => $"{kv.Key}={kv.Value}").ToList();
        if (row.Method == TextPoolBenchmark.Individual && row.Notes.Length > 0) parts.Add(row.Notes);
        return parts.Count == 0 ? "-" : string.Join(", ", parts);
    }

    /// <summary>Writes results.md.</summary>
    public static void WriteMarkdown(TextPoolResult r, string path) => File.WriteAllText(path, ToMarkdown(r));
}
