using System.Globalization;
using System.Text.Json.Nodes;
using MergeDsl.Bench.Data;

namespace MergeDsl.Bench.TaskPool;

/// <summary>
/// Reads task-pool reports (results.json) back and combines runs of different seeds into one result, so seeds can run
/// as separate processes (side by side, or on several machines) and still give one table with mean and spread.
/// </summary>
public static class BenchmarkCombine
{
    /// <summary>
    /// Reads a results.json written by <see cref="BenchmarkReports.WriteJson"/>: every seed's rows (accuracies, chosen
    /// settings, validation scores, seconds, notes), stages and zoo. Accuracies come back at the report's precision
    /// (six decimals of a fraction). Throws <see cref="InvalidDataException"/> naming the file and the field at fault.
    /// </summary>
    public static BenchmarkResult Read(string path)
    {
        var json = ReportJson.Open(path, "mergedsl bench taskpool", "a task-pool report");
        var root = json.Root;
        JsonNode Field(JsonNode? node, string name, string where) => json.Field(node, name, where);
        var tasks = Field(root, "tasks", "the report").AsArray().Select(t => (string)t!).ToList();
        var settings = Field(root, "settings", "the report").AsObject().ToDictionary(kv => kv.Key, kv => (string)kv.Value!);
        var seeds = Field(root, "seeds", "the report").AsArray().Select(s => (int)s!).ToList();
        var methods = Field(root, "methods", "the report").AsObject();
        var pools = Field(root, "model_pool", "the report").AsArray();
        var stageLists = Field(root, "stage_seconds", "the report").AsArray();
        var runs = new List<SeedRun>();
        for (int i = 0; i < seeds.Count; i++)
        {
            int seed = seeds[i];
            var rows = new List<MethodResult>();
            foreach (var (name, node) in methods)
            {
                var perSeed = Field(node, "per_seed", $"method '{name}'").AsArray().FirstOrDefault(p => (int)p!["seed"]! == seed)
                    ?? throw json.Invalid($"method '{name}' has no row for seed {seed}");
                var report = Field(perSeed, "report", $"method '{name}', seed {seed}");
                var accuracy = tasks.Select(t => 100.0 * (double)Field(Field(report, t, $"method '{name}', seed {seed}"), "accuracy", $"task '{t}'")!).ToList();
                var config = Field(perSeed, "config", $"method '{name}', seed {seed}").AsObject().ToDictionary(kv => kv.Key, kv => (string)kv.Value!);
                var validation = (perSeed["validation_accuracy"]?.AsObject() ?? [])
                    .ToDictionary(kv => kv.Key, kv => 100.0 * (double)kv.Value!);
                rows.Add(new MethodResult(name, accuracy, (double)Field(perSeed, "seconds", $"method '{name}', seed {seed}"), config,
                    (string?)perSeed["notes"] ?? "") { Validation = validation });
            }
            var pool = pools.FirstOrDefault(p => (int)p!["seed"]! == seed) ?? throw json.Invalid($"model_pool has no seed {seed}");
            var stages = (stageLists.FirstOrDefault(s => (int)s!["seed"]! == seed)?["stages"]?.AsArray() ?? [])
                .Select(s => ((string)s!["stage"]!, (double)s["seconds"]!)).ToList();
            runs.Add(new SeedRun(seed, rows, stages, (string?)pool["folder"] ?? "", (bool?)pool["from_cache"] ?? false,
                (pool["train_seconds"]?.AsObject() ?? []).ToDictionary(kv => kv.Key, kv => (double)kv.Value!)));
        }
        return new BenchmarkResult(tasks, runs, (string?)root["machine"] ?? "", (bool?)root["quick"] ?? false, settings);
    }

    /// <summary>
    /// One result holding every run of <paramref name="parts"/>, in the order given. Refuses (one line naming the part)
    /// parts that would not make one table: different tasks, quick and full runs mixed, different zoo or split settings,
    /// a repeated seed, or rows that differ in name or in the settings their grid tried.
    /// </summary>
    public static BenchmarkResult Combine(IReadOnlyList<(string Name, BenchmarkResult Result)> parts)
    {
        if (parts.Count == 0) throw new ArgumentException("--combine: no reports given");
        var (firstName, first) = parts[0];
        var runs = new List<SeedRun>();
        static IEnumerable<KeyValuePair<string, string>> Comparable(IReadOnlyDictionary<string, string> s) =>
            s.Where(kv => kv.Key is not ("seeds" or "cpu")).OrderBy(kv => kv.Key, StringComparer.Ordinal);
        foreach (var (name, r) in parts)
        {
            if (!r.Tasks.SequenceEqual(first.Tasks)) throw new ArgumentException($"--combine: {name} has other tasks than {firstName}");
            if (r.Quick != first.Quick) throw new ArgumentException($"--combine: {name} is {(r.Quick ? "a --quick" : "a full")} run, {firstName} is not");
            if (!Comparable(r.Settings).SequenceEqual(Comparable(first.Settings)))
                throw new ArgumentException($"--combine: {name} was run with other settings than {firstName} (zoo, splits or selection)");
            foreach (var run in r.Runs)
            {
                if (runs.Any(x => x.Seed == run.Seed)) throw new ArgumentException($"--combine: seed {run.Seed} appears twice ({name})");
                var rows = run.Methods.Select(m => m.Method).ToList();
                var expected = first.Runs[0].Methods.Select(m => m.Method).ToList();
                if (!rows.SequenceEqual(expected)) throw new ArgumentException($"--combine: {name} has other rows than {firstName}");
                foreach (var m in run.Methods)
                {
                    var grid = first.Runs[0].Find(m.Method)!.Validation.Keys.Order(StringComparer.Ordinal);
                    if (!m.Validation.Keys.Order(StringComparer.Ordinal).SequenceEqual(grid))
                        throw new ArgumentException($"--combine: {name}'s row '{m.Method}' tried other settings than {firstName}'s");
                }
                runs.Add(run);
            }
        }
        var machines = parts.Select(p => p.Result.Machine).Distinct().ToList();
        var settings = new Dictionary<string, string>(first.Settings)
        {
            ["seeds"] = string.Join(",", runs.Select(r => r.Seed.ToString(CultureInfo.InvariantCulture))),
            ["combined_from"] = string.Join(", ", parts.Select(p => p.Name)),
        };
        return new BenchmarkResult(first.Tasks, runs, string.Join(" | ", machines), first.Quick, settings);
    }
}
