using System.Diagnostics;
using System.Text.Json;
using MergeDsl.Bench.Data;
using MergeDsl.Bench.TaskPool;
using MergeDsl.Bench.TextPool;
using MergeDsl.Core.Adaptation;
using MergeDsl.Core.Models.Decoder;
using MergeDsl.Core.Moe;

namespace MergeDsl.Bench.TextScale;

/// <summary>
/// The scale study: for every width and base (pretraining steps) one text-pool zoo (trained once, cached with the
/// pool's), then for every expert count k the first k experts of one seeded order merged by each row, every row's
/// setting chosen on the merged domains' validation text and scored on test text of the merged and the held-out domains.
/// </summary>
public static class TextScaleStudy
{
    /// <summary>Runs the study; throws <see cref="DataNotInstalledException"/> (naming the install command) without data.</summary>
    public static TextScaleResult Run(TextScaleOptions o)
    {
        o.Validate();
        var log = o.Log ?? (_ => { });
        var clock = new StageClock(log);
        var heldIn = o.Zoo.Experts.Select(TextDomains.ByName).ToList();
        var heldOut = TextDomains.All.Where(d => d.HeldOut).ToList();
        var data = TextPoolBenchmark.LoadData(o.DataRoot, [.. heldIn, .. heldOut], o.Zoo.Sizes, log);
        clock.Stage("data");
        var order = o.ExpertOrder();
        log($"expert order (seed {o.Seed}): {string.Join(", ", order)}; held out: {string.Join(", ", heldOut.Select(d => d.Name))}");
        var points = new List<TextScalePoint>();
        var zoos = new List<TextScaleZoo>();
        foreach (var width in o.Widths)
            for (int b = 0; b < o.PretrainSteps.Count; b++)
            {
                var steps = o.PretrainSteps[b];
                var settings = o.Zoo with { Width = width, PretrainSteps = steps, Seed = o.Seed };
                var zoo = TextZooBuilder.Build(settings, data, Path.Combine(o.DataRoot, "textzoo"), log);
                var refs = ZooReferences.Measure(zoo, heldOut, data, o.Zoo.Context, o.EvalBatch);
                zoos.Add(new TextScaleZoo(width, steps, refs.Parameters, zoo.Folder, zoo.FromCache, zoo.TrainSeconds));
                var label = BaseLabel(o.PretrainSteps, b);
                clock.Stage($"zoo width {width}, {label} base ({steps} steps){(zoo.FromCache ? ", cached" : "")}");
                foreach (var k in o.ExpertCounts)
                {
                    var subset = order.Take(k).ToList();
                    var config = new Configuration(width, refs.Parameters, steps, label, subset, heldOut.Select(d => d.Name).ToList(), refs);
                    points.AddRange(RunConfiguration(o, zoo, config, data, log));
                    clock.Stage($"width {width}, {label} base, {k} experts");
                }
            }
        return new TextScaleResult(points, zoos, order, heldOut.Select(d => d.Name).ToList(), TaskPoolBenchmark.MachineDescription(),
            o.Quick, o.Seed, Settings(o), clock.Stages);
    }

    /// <summary>"weak" for the fewest pretraining steps, "strong" for the most, "steps N" between.</summary>
    static string BaseLabel(IReadOnlyList<int> steps, int index) =>
        steps[index] == steps.Min() && steps.Count > 1 ? "weak" : steps[index] == steps.Max() ? "strong" : $"steps {steps[index]}";

    static IReadOnlyDictionary<string, string> Settings(TextScaleOptions o) => new Dictionary<string, string>
    {
        ["zoo"] = JsonSerializer.Serialize(o.Zoo with { Seed = 0, Width = 0, PretrainSteps = 0 }),
        ["widths"] = string.Join(",", o.Widths),
        ["pretrain_steps"] = string.Join(",", o.PretrainSteps),
        ["expert_counts"] = string.Join(",", o.ExpertCounts),
        ["subsets"] = "the first k domains of one seeded order of the held-in domains (nested: every smaller subset is inside every larger one)",
        ["selection"] = "every row's setting with the lowest mean bits per byte on the merged domains' validation splits; test splits are only reported",
        ["normalised_held_in"] = "mean over merged domains of (expert's bits per byte / row's bits per byte)",
        ["normalised_held_out"] = "mean over held-out domains of (best merged expert's bits per byte, chosen on validation / row's bits per byte)",
        ["held_out_vs_pretrained"] = "mean over held-out domains of (base's bits per byte / row's bits per byte)",
        ["wemoe"] = $"every decoder MLP upscaled, routed per token; routers start at task arithmetic's chosen λ; {o.WeMoESteps} router steps of 2 windows per domain on the merged domains' unlabelled test text; {(o.WeMoELrs.Count == 1 ? $"lr {o.WeMoELrs[0]} (the full text pool's validation choice)" : $"lr chosen on validation among {string.Join(", ", o.WeMoELrs)}")}",
        ["seed"] = $"{o.Seed}",
    };

    sealed record Configuration(int Width, long Parameters, int PretrainSteps, string Base, IReadOnlyList<string> Experts,
        IReadOnlyList<string> HeldOut, ZooReferences Refs);

    static IEnumerable<TextScalePoint> RunConfiguration(TextScaleOptions o, TextZoo zoo, Configuration c,
        IReadOnlyDictionary<string, TextSplits> data, Action<string> log)
    {
        var merged = c.Experts.Select(TextDomains.ByName).ToList();
        var heldOut = c.HeldOut.Select(TextDomains.ByName).ToList();
        var runner = new TextRowRunner(merged, [.. merged, .. heldOut], data, o.Zoo.Context, o.EvalBatch, _ => { });
        var inputs = new TextRowInputs(zoo.BaseFolder, c.Experts.Select(zoo.ExpertFolder).ToList(), c.Experts, data, o.Seed);
        var individual = c.Experts.Select(d => c.Refs.Own[d]).ToList();
        // A held-out domain's reference is the merged expert best on its validation text.
        var bestExpert = c.HeldOut.Select(h => c.Experts.MinBy(e => c.Refs.HeldOutValidation[(e, h)])!).ToList();
        var individualOut = c.HeldOut.Select((h, i) => c.Refs.HeldOutTest[(bestExpert[i], h)]).ToList();
        var pretrainedOut = c.HeldOut.Select(h => c.Refs.Pretrained[h]).ToList();

        TextScalePoint Point(string method, IReadOnlyList<double> inBpb, IReadOnlyList<double> outBpb, IReadOnlyDictionary<string, string> chosen, double seconds)
        {
            var p = new TextScalePoint(c.Width, c.Parameters, c.PretrainSteps, c.Base, c.Experts, method,
                inBpb.Average(), outBpb.Average(),
                individual.Zip(inBpb, (r, m) => r / m).Average(),
                individualOut.Zip(outBpb, (r, m) => r / m).Average(),
                pretrainedOut.Zip(outBpb, (r, m) => r / m).Average(),
                chosen, seconds);
            log(FormattableString.Invariant(
                $"width {c.Width} {c.Base} k={c.Experts.Count} {method}: held-in {p.HeldIn:F3} bpb ({p.NormalisedHeldIn:F3} of experts), held-out {p.HeldOut:F3} bpb ({p.NormalisedHeldOut:F3}) [{seconds:F1} s]"));
            return p;
        }

        yield return Point("Pretrained", c.Experts.Select(d => c.Refs.Pretrained[d]).ToList(), pretrainedOut, new Dictionary<string, string>(), 0);
        yield return Point(TextPoolBenchmark.Individual, individual, individualOut,
            c.HeldOut.Select((h, i) => (h, bestExpert[i])).ToDictionary(x => $"expert for {x.h}", x => x.Item2), 0);

        bool Wants(string m) => o.Methods is null || o.Methods.Contains(m);
        TextScalePoint RunRow(ITextRowProducer row)
        {
            var r = runner.Run(row, inputs);
            int n = merged.Count;
            return Point(row.Method, r.Scores.Take(n).Select(s => s.BitsPerByte).ToList(), r.Scores.Skip(n).Select(s => s.BitsPerByte).ToList(),
                r.Chosen, r.Seconds);
        }

        if (Wants("Simple Average")) yield return RunRow(RegistryMergeRow.Average());
        bool anyWemoe = TextScaleOptions.MethodNames.Where(m => m.StartsWith("WEMoE", StringComparison.Ordinal)).Any(Wants);
        double? taLambda = null;
        if (Wants("Task Arithmetic") || anyWemoe)
        {
            var ta = RunRow(RegistryMergeRow.TaskArithmetic(o.TaLambdas));
            taLambda = TextRowSources.Number(ta.Chosen, "lambda");
            if (Wants("Task Arithmetic")) yield return ta;
        }
        if (Wants("TIES-Merging")) yield return RunRow(RegistryMergeRow.Ties(o.TiesLambdas, o.TiesDensities));
        foreach (var objective in new[] { AdaptObjective.Entropy, AdaptObjective.Distillation })
        {
            var row = new WeMoETextRow(MoeKind.WeMoE, objective, o.WeMoESteps, 2, [taLambda ?? 0], o.WeMoELrs);
            if (Wants(row.Method)) yield return RunRow(row);
        }
    }
}

/// <summary>
/// What every configuration of one zoo compares against: the base on every domain's test text, each expert on its own
/// domain's test text, and each expert on every held-out domain's validation and test text.
/// </summary>
sealed record ZooReferences(long Parameters, IReadOnlyDictionary<string, double> Pretrained, IReadOnlyDictionary<string, double> Own,
    IReadOnlyDictionary<(string Expert, string HeldOut), double> HeldOutValidation, IReadOnlyDictionary<(string Expert, string HeldOut), double> HeldOutTest)
{
    public static ZooReferences Measure(TextZoo zoo, IReadOnlyList<TextDomain> heldOut, IReadOnlyDictionary<string, TextSplits> data, int context, int batch)
    {
        var experts = zoo.Settings.Experts;
        var pretrained = new Dictionary<string, double>();
        long parameters;
        using (var m = DecoderModelFolder.Load(zoo.BaseFolder))
        {
            parameters = m.ParameterCount;
            foreach (var d in experts.Concat(heldOut.Select(h => h.Name)))
                pretrained[d] = TextScore.Of(m, data[d].Test, context, batch).BitsPerByte;
        }
        var own = new Dictionary<string, double>();
        var valid = new Dictionary<(string, string), double>();
        var test = new Dictionary<(string, string), double>();
        foreach (var e in experts)
        {
            using var m = DecoderModelFolder.Load(zoo.ExpertFolder(e));
            own[e] = TextScore.Of(m, data[e].Test, context, batch).BitsPerByte;
            foreach (var h in heldOut)
            {
                valid[(e, h.Name)] = TextScore.Of(m, data[h.Name].Validation, context, batch).BitsPerByte;
                test[(e, h.Name)] = TextScore.Of(m, data[h.Name].Test, context, batch).BitsPerByte;
            }
        }
        return new ZooReferences(parameters, pretrained, own, valid, test);
    }
}
