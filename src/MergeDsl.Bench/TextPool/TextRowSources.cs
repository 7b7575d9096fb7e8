using System.Globalization;
using MergeDsl.Core.Adaptation;
using MergeDsl.Core.Checkpoints;
using MergeDsl.Core.Models.Decoder;

namespace MergeDsl.Bench.TextPool;

/// <summary>
/// The zoo's folders opened as tensor sources (base and experts, read through <see cref="Checkpoint"/>), and the
/// unlabelled text the dynamic rows adapt on. Disposing closes the checkpoints.
/// </summary>
sealed class TextRowSources : IDisposable
{
    /// <summary>The decoder configuration of the base (the experts share it).</summary>
    public DecoderConfig Config { get; }
    /// <summary>The pretrained model.</summary>
    public ITensorSource Base { get; }
    /// <summary>The experts, in held-in domain order.</summary>
    public IReadOnlyList<ITensorSource> Experts { get; }

    public TextRowSources(TextRowInputs inputs)
    {
        Config = DecoderConfig.Load(inputs.BaseFolder);
        var opened = new List<ITensorSource>();
        try
        {
            Base = Checkpoint.Open(inputs.BaseFolder);
            opened.Add(Base);
            foreach (var f in inputs.ExpertFolders) opened.Add(Checkpoint.Open(f));
        }
        catch
        {
            foreach (var s in opened) s.Dispose();
            throw;
        }
        Experts = opened.Skip(1).ToList();
    }

    /// <summary>
    /// Test-time adaptation data, as in the WEMoE and AdaMerging papers: each held-in domain's <b>test</b> text,
    /// unlabelled. The objectives read the models' next-byte distributions (and, for distillation, the experts'),
    /// never which byte comes next; the byte tokenizer's ids are the byte values.
    /// </summary>
    public static IReadOnlyList<TextTaskData> AdaptationText(TextRowInputs inputs) =>
        inputs.ExpertDomains.Select(d =>
        {
            var text = inputs.Data[d].Test;
            return new TextTaskData(d, text.Select(b => (int)b).ToArray(), text.Length, $"{d} test text");
        }).ToList();

    /// <summary>The expert models, loaded as distillation teachers (the caller disposes them).</summary>
    public static DecoderExpertTeachers Teachers(TextRowInputs inputs) =>
        new(inputs.ExpertFolders.Select(f => DecoderModelFolder.Load(f)).ToList());

    /// <summary>A number of a setting.</summary>
    public static double Number(IReadOnlyDictionary<string, string> setting, string key) =>
        double.Parse(setting[key], CultureInfo.InvariantCulture);

    /// <summary>A number as a setting's text (round-trip, invariant).</summary>
    public static string Text(double x) => x.ToString("R", CultureInfo.InvariantCulture);

    /// <summary>Every combination of the named values, as settings.</summary>
    public static IReadOnlyList<IReadOnlyDictionary<string, string>> Grid(params (string Key, IReadOnlyList<double> Values)[] axes)
    {
        IEnumerable<Dictionary<string, string>> acc = [new Dictionary<string, string>()];
        foreach (var (key, values) in axes)
            acc = acc.SelectMany(s => values.Select(v => new Dictionary<string, string>(s) { [key] = Text(v) })).ToList();
        return acc.Cast<IReadOnlyDictionary<string, string>>().ToList();
    }

    public void Dispose()
    {
        Base.Dispose();
        foreach (var e in Experts) e.Dispose();
    }
}
