using MergeDsl.Core.Checkpoints;
using MergeDsl.Core.Compilation;
using MergeDsl.Core.Execution;
using MergeDsl.Core.Ir;
using static TorchSharp.torch;

namespace MergeDsl.Core.TaskPool;

/// <summary>
/// The benchmark's static merges as recipes of the merge algebra (the same IR the DSL compiles to), run by the
/// recipe compiler and executor in memory.
/// </summary>
public static class TaskPoolRecipes
{
    static Expr TaskVectors() => new Ir.TaskVectors(new Experts(), new BaseModel());

    static Expr OnBase(Expr mergedTaskVector, double lambda) => new Add(new BaseModel(), new Scale(mergedTaskVector, ScaleFactor.Of(lambda)));

    /// <summary>Mean of the experts.</summary>
    public static MergeRecipe SimpleAverage() => MergeRecipe.Of(new Reduce(new Experts(), Reduction.Mean)) with { Name = "simple_average" };

    /// <summary>Task arithmetic: θ₀ + λ Σᵢ τᵢ.</summary>
    public static MergeRecipe TaskArithmetic(double lambda) =>
        MergeRecipe.Of(OnBase(new Reduce(TaskVectors(), Reduction.Sum), lambda)) with { Name = "task_arithmetic" };

    /// <summary>TIES: each τᵢ trimmed to its top-<paramref name="density"/> magnitudes over the whole model, sign elected by mass, agreeing entries summed, scaled by λ.</summary>
    public static MergeRecipe Ties(double density, double lambda) =>
        MergeRecipe.Of(OnBase(new Reduce(new ElectSign(new Sparsify(TaskVectors(), new TopK(density, TopKScope.Global)), SignRule.Mass), Reduction.Sum), lambda))
            with { Name = "ties" };

    /// <summary>DARE-TIES: each τᵢ entry kept with probability <paramref name="density"/> and rescaled by 1/density, then TIES' sign election and sum, scaled by λ.</summary>
    public static MergeRecipe DareTies(double density, double lambda) =>
        MergeRecipe.Of(OnBase(new Reduce(new ElectSign(new Sparsify(TaskVectors(), new Bernoulli(density, DareRescale.Inverse)), SignRule.Mass), Reduction.Sum), lambda))
            with { Name = "dare_ties" };

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
