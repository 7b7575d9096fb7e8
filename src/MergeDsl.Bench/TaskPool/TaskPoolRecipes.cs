using System.Globalization;
using MergeDsl.Core.Checkpoints;
using MergeDsl.Core.Compilation;
using MergeDsl.Core.Execution;
using MergeDsl.Core.Ir;
using static TorchSharp.torch;

namespace MergeDsl.Bench.TaskPool;

/// <summary>
/// The benchmark's static merges, taken from the method registry with FusionBench's settings (TIES and
/// DARE-TIES trim over the whole model and sum the agreeing entries), run by the recipe compiler and
/// executor in memory.
/// </summary>
public static class TaskPoolRecipes
{
    static string Text(double x) => x.ToString("R", CultureInfo.InvariantCulture);

    static MergeRecipe Registered(string name, params (string Key, string Value)[] settings) =>
        MethodRegistry.recipe(name, settings.ToDictionary(s => s.Key, s => s.Value));

    /// <summary>Mean of the experts.</summary>
    public static MergeRecipe SimpleAverage() => Registered("average");

    /// <summary>Task arithmetic: θ₀ + λ Σᵢ τᵢ.</summary>
    public static MergeRecipe TaskArithmetic(double lambda) => Registered("task-arithmetic", ("lambda", Text(lambda)));

    /// <summary>TIES: each τᵢ trimmed to its top-<paramref name="density"/> magnitudes over the whole model, sign elected by mass, agreeing entries summed, scaled by λ.</summary>
    public static MergeRecipe Ties(double density, double lambda) =>
        Registered("ties", ("density", Text(density)), ("lambda", Text(lambda)), ("scope", "global"), ("merge", "sum"));

    /// <summary>DARE-TIES: each τᵢ entry kept with probability <paramref name="density"/> and rescaled by 1/density, then TIES' sign election and sum, scaled by λ.</summary>
    public static MergeRecipe DareTies(double density, double lambda) =>
        Registered("dare-ties", ("density", Text(density)), ("lambda", Text(lambda)), ("rescale", "inverse"), ("merge", "sum"));

    /// <summary>Runs <paramref name="recipe"/> over in-memory models; the caller owns the returned tensors.</summary>
    public static Dictionary<string, Tensor> Run(MergeRecipe recipe, ITensorSource baseModel, IReadOnlyList<ITensorSource> experts, long seed)
    {
        // The executor's reader and writer threads dispose tensors that its calling thread creates; a dispose scope
        // open on the caller (the benchmark opens one per method) would then be edited from two threads at once.
        // Running it from a thread with no open scope keeps the caller's scope out of it.
        return Task.Run(() =>
        {
            var plan = Compiler.Compile(recipe, MergeInputs.Of(baseModel, [.. experts]));
            var sink = new MemorySink();
            Executor.Run(plan, sink, new MergeOptions { Seed = seed });
            return sink.Tensors.ToDictionary(kv => kv.Key, kv => kv.Value);
        }).GetAwaiter().GetResult();
    }
}
