using TorchSharp.Modules;

namespace MergeDsl.Bench.TaskPool;

/// <summary>The learning-rate schedules the zoos train with (the CLIP pool's and the text pool's).</summary>
static class TrainingSchedule
{
    /// <summary>Linear warm-up over <paramref name="warmup"/> steps to <paramref name="peak"/>, then cosine decay to 0 at <paramref name="total"/>.</summary>
    public static double CosineLr(double peak, int step, int total, int warmup)
    {
        if (step < warmup) return peak * (step + 1) / warmup;
        double p = (double)(step - warmup) / Math.Max(1, total - warmup);
        return peak * 0.5 * (1 + Math.Cos(Math.PI * p));
    }

    /// <summary>Sets every parameter group's learning rate.</summary>
    public static void SetLr(OptimizerHelper opt, double lr)
    {
        foreach (var g in opt.ParamGroups) g.LearningRate = lr;
    }
}
