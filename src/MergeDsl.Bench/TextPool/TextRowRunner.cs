using System.Diagnostics;
using MergeDsl.Bench.Data;
using MergeDsl.Core.Models.Decoder;

namespace MergeDsl.Bench.TextPool;

/// <summary>
/// Runs rows the way the text pool and the scale study do: every setting of a row's grid is built and scored on
/// the held-in domains' validation text, and only the setting with the lowest mean bits per byte is scored on test text.
/// </summary>
/// <param name="HeldIn">Domains whose validation text chooses the setting (the merged experts' domains).</param>
/// <param name="Scored">Domains scored on test text, in report order (held-in first, then held-out).</param>
/// <param name="Data">Every domain's splits, by name.</param>
/// <param name="Context">Scoring window in bytes.</param>
/// <param name="EvalBatch">Windows per scoring pass.</param>
/// <param name="Log">Progress lines.</param>
public sealed record TextRowRunner(IReadOnlyList<TextDomain> HeldIn, IReadOnlyList<TextDomain> Scored,
    IReadOnlyDictionary<string, TextSplits> Data, int Context, int EvalBatch, Action<string> Log)
{
    /// <summary>A model's scores on a domain's test text.</summary>
    public TextScore Test(DecoderModel model, TextDomain domain) => TextScore.Of(model, Data[domain.Name].Test, Context, EvalBatch);

    /// <summary>A model's scores on a domain's validation text.</summary>
    public TextScore Valid(DecoderModel model, TextDomain domain) => TextScore.Of(model, Data[domain.Name].Validation, Context, EvalBatch);

    /// <summary>
    /// Builds every setting of <paramref name="row"/>'s grid, keeps the one with the lowest mean held-in validation bits
    /// per byte (a single setting is not scored on validation), and returns its test scores on <see cref="Scored"/>.
    /// The best setting's model is kept rather than built again: a dynamic row's build is a whole adaptation.
    /// </summary>
    public TextRowResult Run(ITextRowProducer row, TextRowInputs inputs)
    {
        if (row.Grid.Count == 0) throw new ArgumentException($"row {row.Method}: an empty hyper-parameter grid");
        var sw = Stopwatch.StartNew();
        var validation = new Dictionary<string, double>();
        IReadOnlyDictionary<string, string>? best = null;
        DecoderModel? bestModel = null;
        double bestBpb = double.PositiveInfinity;
        try
        {
            foreach (var setting in row.Grid)
            {
                var m = row.Build(inputs, setting);
                if (row.Grid.Count == 1) { best = setting; bestModel = m; break; }
                double v;
                try
                {
                    v = HeldIn.Average(d =>
                    {
                        row.ForDomain(m, inputs, d.Name);
                        return Valid(m, d).BitsPerByte;
                    });
                }
                catch
                {
                    m.Dispose();
                    throw;
                }
                validation[Describe(setting)] = v;
                Log(FormattableString.Invariant($"  {row.Method} {Describe(setting)}: validation {v:F4} bpb ({sw.Elapsed.TotalSeconds:F0} s)"));
                // NaN (a diverged setting) never wins: the comparison is false.
                if (v < bestBpb)
                {
                    bestModel?.Dispose();
                    bestBpb = v; best = setting; bestModel = m;
                }
                else m.Dispose();
            }
            if (bestModel is null) throw new InvalidOperationException($"row {row.Method}: every setting diverged on validation text");
            var model = bestModel;
            var scores = Scored.Select(d =>
            {
                row.ForDomain(model, inputs, d.Name);
                return Test(model, d);
            }).ToList();
            var chosen = new Dictionary<string, string>(row.Fixed);
            foreach (var (k, v) in best!) chosen[k] = v;
            return new TextRowResult(row.Method, scores, sw.Elapsed.TotalSeconds, chosen, validation,
                validation.Count > 0 ? $"chosen on validation: {Describe(best!)}" : "");
        }
        finally { bestModel?.Dispose(); }
    }

    /// <summary>A setting as text (<c>key=value, ...</c>; <c>-</c> when empty).</summary>
    public static string Describe(IReadOnlyDictionary<string, string> setting) =>
        setting.Count == 0 ? "-" : string.Join(", ", setting.Select(kv => $"{kv.Key}={kv.Value}"));
}
