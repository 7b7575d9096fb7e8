using System.Diagnostics;
using System.Text.Json;
using MergeDsl.Bench.Data;
using MergeDsl.Bench.TaskPool;
using MergeDsl.Core.Models.Decoder;

namespace MergeDsl.Bench.TextPool;

/// <summary>
/// The real-text task pool: for each seed, the domains' splits, the zoo (trained once, cached), then every row
/// scored on every domain's test text, its hyper-parameters chosen on the held-in domains' validation text.
/// </summary>
public static class TextPoolBenchmark
{
    /// <summary>Name of the row of each expert on its own domain.</summary>
    public const string Individual = "Individual";

    /// <summary>The rows after Pretrained and Individual, in table order: the registry's static merges, then <see cref="TextPoolOptions.ExtraRows"/>.</summary>
    public static IReadOnlyList<ITextRowProducer> Rows(TextPoolOptions o) =>
    [
        RegistryMergeRow.Average(),
        RegistryMergeRow.TaskArithmetic(o.TaLambdas),
        RegistryMergeRow.Ties(o.TiesLambdas, o.TiesDensities),
        RegistryMergeRow.DareTies(o.TiesLambdas, o.DareDensities),
        .. o.ExtraRows,
    ];

    /// <summary>The domains of a run: the zoo's experts (held-in), then the held-out ones.</summary>
    public static IReadOnlyList<TextDomain> Domains(TextPoolOptions o)
    {
        var heldOut = o.HeldOut.Select(TextDomains.ByName).ToList();
        foreach (var d in heldOut)
            if (!d.HeldOut) throw new ArgumentException($"domain '{d.Name}' is a held-in domain, not a held-out one");
        return [.. o.Zoo.Experts.Select(TextDomains.ByName), .. heldOut];
    }

    /// <summary>Loads (or extracts and caches) every domain's splits.</summary>
    public static IReadOnlyDictionary<string, TextSplits> LoadData(string dataRoot, IEnumerable<TextDomain> domains, TextSplitSizes sizes, Action<string>? log = null)
    {
        var corpus = new TextCorpus(dataRoot);
        return domains.ToDictionary(d => d.Name, d => corpus.Load(d, sizes, log));
    }

    /// <summary>Runs every seed; throws <see cref="DataNotInstalledException"/> (naming the install command) without data.</summary>
    public static TextPoolResult Run(TextPoolOptions o)
    {
        var log = o.Log ?? (_ => { });
        o.Zoo.Validate();
        var domains = Domains(o);
        var runs = new List<TextPoolRun>();
        IReadOnlyDictionary<string, TextSplits>? data = null;
        foreach (var seed in o.Seeds)
        {
            log($"== seed {seed}");
            var clock = new StageClock(log);
            data = LoadData(o.DataRoot, domains, o.Zoo.Sizes, log);
            clock.Stage("data");
            runs.Add(RunSeed(o with { Zoo = o.Zoo with { Seed = seed } }, domains, data, clock, log));
        }
        var settings = new Dictionary<string, string>
        {
            ["zoo"] = JsonSerializer.Serialize(o.Zoo with { Seed = 0 }),
            ["model"] = o.Zoo.ModelConfig().ToJson(),
            ["selection"] = "every row's setting with the lowest mean bits per byte on the held-in domains' validation splits; test splits are only reported",
            ["held_out_individual"] = "the expert with the lowest bits per byte on the held-out domain's validation split",
            ["scoring"] = $"consecutive windows of {o.Zoo.Context + 1} bytes: every byte after a window's first is predicted once from the bytes before it in its window",
            ["seeds"] = string.Join(",", o.Seeds),
        };
        return new TextPoolResult(runs, domains.Select(d => data![d.Name].Info).ToList(), TaskPoolBenchmark.MachineDescription(), o.Quick, settings);
    }

    static TextPoolRun RunSeed(TextPoolOptions o, IReadOnlyList<TextDomain> domains, IReadOnlyDictionary<string, TextSplits> data, StageClock clock, Action<string> log)
    {
        var zoo = TextZooBuilder.Build(o.Zoo, data, Path.Combine(o.DataRoot, "textzoo"), log);
        clock.Stage(zoo.FromCache ? "zoo (cached)" : "zoo (train)");
        var inputs = new TextRowInputs(zoo.BaseFolder, zoo.ExpertFolders, o.Zoo.Experts, data, o.Zoo.Seed);
        var heldIn = domains.Where(d => !d.HeldOut).ToList();
        var rows = new List<TextRowResult>();
        var runner = new TextRowRunner(heldIn, domains, data, o.Zoo.Context, o.EvalBatch, log);
        void AddRow(ITextRowProducer p)
        {
            var r = runner.Run(p, inputs);
            rows.Add(r);
            Log(r);
            clock.Stage(p.Method.ToLowerInvariant());
        }
        void Log(TextRowResult r) => log(FormattableString.Invariant(
            $"{r.Method}: held-in {r.Scores.Take(heldIn.Count).Average(s => s.BitsPerByte):F3} bpb, held-out {r.Scores.Skip(heldIn.Count).DefaultIfEmpty(new TextScore(double.NaN, double.NaN, 0)).Average(s => s.BitsPerByte):F3} bpb ({r.Seconds:F1} s)"));

        AddRow(new PretrainedRow());
        rows.Add(IndividualRow(zoo, domains, runner.Test, runner.Valid, log, out var matrix));
        Log(rows[^1]);
        clock.Stage("individual");
        foreach (var p in Rows(o))
            if (o.Methods is null || o.Methods.Contains(p.Method)) AddRow(p);
        return new TextPoolRun(o.Zoo.Seed, domains, rows, clock.Stages, zoo.Folder, zoo.FromCache, zoo.TrainSeconds, matrix);
    }

    /// <summary>
    /// Each expert on its own domain; on a held-out domain, the expert with the lowest validation bits per byte
    /// there (the mean over all experts is in the notes and the expert matrix).
    /// </summary>
    static TextRowResult IndividualRow(TextZoo zoo, IReadOnlyList<TextDomain> domains, Func<DecoderModel, TextDomain, TextScore> test,
        Func<DecoderModel, TextDomain, TextScore> valid, Action<string> log, out double[][] matrix)
    {
        var sw = Stopwatch.StartNew();
        var experts = zoo.Settings.Experts;
        var heldOut = domains.Where(d => d.HeldOut).ToList();
        var scores = new TextScore[domains.Count];
        matrix = experts.Select(_ => Enumerable.Repeat(double.NaN, domains.Count).ToArray()).ToArray();
        var testByExpert = new Dictionary<(int, string), TextScore>();
        var validByExpert = new Dictionary<(int, string), double>();
        for (int e = 0; e < experts.Count; e++)
        {
            using var m = DecoderModelFolder.Load(zoo.ExpertFolder(experts[e]));
            for (int j = 0; j < domains.Count; j++)
            {
                var d = domains[j];
                if (d.Name == experts[e]) scores[j] = test(m, d);
                else if (!d.HeldOut) continue;
                else
                {
                    testByExpert[(e, d.Name)] = test(m, d);
                    validByExpert[(e, d.Name)] = valid(m, d).BitsPerByte;
                }
                matrix[e][j] = (d.Name == experts[e] ? scores[j] : testByExpert[(e, d.Name)]).BitsPerByte;
            }
        }
        var notes = new List<string>();
        var chosen = new Dictionary<string, string>();
        foreach (var d in heldOut)
        {
            int j = domains.ToList().IndexOf(d);
            int best = Enumerable.Range(0, experts.Count).MinBy(e => validByExpert[(e, d.Name)]);
            scores[j] = testByExpert[(best, d.Name)];
            chosen[$"expert for {d.Name}"] = experts[best];
            double mean = Enumerable.Range(0, experts.Count).Average(e => testByExpert[(e, d.Name)].BitsPerByte);
            notes.Add(FormattableString.Invariant($"{d.Name}: expert {experts[best]} (best on validation), mean over experts {mean:F3} bpb"));
        }
        return new TextRowResult(Individual, scores, sw.Elapsed.TotalSeconds, chosen, new Dictionary<string, double>(), string.Join("; ", notes));
    }
}
