using System.Globalization;
using MergeDsl.Bench.TaskPool;
using MergeDsl.Core.Checkpoints;
using MergeDsl.Core.Ir;
using MergeDsl.Core.Models.Decoder;

namespace MergeDsl.Bench.TextPool;

/// <summary>The pretrained model itself.</summary>
public sealed class PretrainedRow : ITextRowProducer
{
    /// <inheritdoc/>
    public string Method => "Pretrained";
    /// <inheritdoc/>
    public IReadOnlyList<IReadOnlyDictionary<string, string>> Grid { get; } = [new Dictionary<string, string>()];
    /// <inheritdoc/>
    public IReadOnlyDictionary<string, string> Fixed { get; } = new Dictionary<string, string>();
    /// <inheritdoc/>
    public DecoderModel Build(TextRowInputs inputs, IReadOnlyDictionary<string, string> setting) => DecoderModelFolder.Load(inputs.BaseFolder);
}

/// <summary>
/// A static merge from the method registry (the recipe <c>mergedsl run</c> builds for the same name and
/// settings), run over the zoo's folders by the recipe compiler and executor, loaded into a decoder.
/// </summary>
/// <param name="Method">Row name.</param>
/// <param name="Recipe">The registry recipe for one setting.</param>
/// <param name="Grid">Settings to choose among on validation text.</param>
/// <param name="Fixed">Settings that are not chosen.</param>
public sealed record RegistryMergeRow(string Method, Func<IReadOnlyDictionary<string, string>, MergeRecipe> Recipe,
    IReadOnlyList<IReadOnlyDictionary<string, string>> Grid, IReadOnlyDictionary<string, string> Fixed) : ITextRowProducer
{
    /// <inheritdoc/>
    public DecoderModel Build(TextRowInputs inputs, IReadOnlyDictionary<string, string> setting)
    {
        var recipe = Recipe(setting);
        using var baseModel = Checkpoint.Open(inputs.BaseFolder);
        var experts = inputs.ExpertFolders.Select(f => (ITensorSource)Checkpoint.Open(f)).ToList();
        Dictionary<string, TorchSharp.torch.Tensor>? merged = null;
        try
        {
            merged = TaskPoolRecipes.Run(recipe, baseModel, experts, inputs.Seed);
            var model = new DecoderModel(DecoderConfig.Load(inputs.BaseFolder), $"{Method} ({recipe.Name})");
            model.LoadWeights(merged, recipe.Name);
            return model;
        }
        finally
        {
            foreach (var e in experts) e.Dispose();
            if (merged is not null) foreach (var t in merged.Values) t.Dispose();
        }
    }

    static string Num(double x) => x.ToString("R", CultureInfo.InvariantCulture);

    static double Get(IReadOnlyDictionary<string, string> s, string key) => double.Parse(s[key], CultureInfo.InvariantCulture);

    static IReadOnlyList<IReadOnlyDictionary<string, string>> Product(IReadOnlyList<double> lambdas, IReadOnlyList<double>? densities = null) =>
        (from l in lambdas
         from d in densities ?? [double.NaN]
         select (IReadOnlyDictionary<string, string>)(double.IsNaN(d)
             ? new Dictionary<string, string> { ["lambda"] = Num(l) }
             : new Dictionary<string, string> { ["lambda"] = Num(l), ["density"] = Num(d) })).ToList();

    /// <summary>Simple average of the experts (no hyper-parameter).</summary>
    public static RegistryMergeRow Average() =>
        new("Simple Average", _ => TaskPoolRecipes.SimpleAverage(), [new Dictionary<string, string>()], new Dictionary<string, string>());

    /// <summary>Task arithmetic with λ chosen among <paramref name="lambdas"/>.</summary>
    public static RegistryMergeRow TaskArithmetic(IReadOnlyList<double> lambdas) =>
        new("Task Arithmetic", s => TaskPoolRecipes.TaskArithmetic(Get(s, "lambda")), Product(lambdas), new Dictionary<string, string>());

    /// <summary>TIES (global top-k, sign by mass, sum of agreeing entries) with λ and density chosen on validation.</summary>
    public static RegistryMergeRow Ties(IReadOnlyList<double> lambdas, IReadOnlyList<double> densities) =>
        new("TIES-Merging", s => TaskPoolRecipes.Ties(Get(s, "density"), Get(s, "lambda")), Product(lambdas, densities),
            new Dictionary<string, string> { ["scope"] = "global", ["merge"] = "sum" });

    /// <summary>DARE-TIES (Bernoulli keep, 1/density rescale, sign election, sum) with λ and density chosen on validation.</summary>
    public static RegistryMergeRow DareTies(IReadOnlyList<double> lambdas, IReadOnlyList<double> densities) =>
        new("DARE-TIES", s => TaskPoolRecipes.DareTies(Get(s, "density"), Get(s, "lambda")), Product(lambdas, densities),
            new Dictionary<string, string> { ["rescale"] = "inverse", ["merge"] = "sum" });
}
