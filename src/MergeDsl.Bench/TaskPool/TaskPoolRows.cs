using System.Diagnostics;
using System.Text.Json;
using MergeDsl.Core.Adaptation;
using MergeDsl.Core.Checkpoints;
using MergeDsl.Core.Evaluation;
using MergeDsl.Core.Ir;
using MergeDsl.Core.Models;
using MergeDsl.Core.Moe;
using TorchSharp;
using static TorchSharp.torch;

namespace MergeDsl.Bench.TaskPool;

/// <summary>
/// The rows of one task-pool run, over a trained (or cached) zoo: each <c>Add…</c> method runs one group of the
/// table's methods (baselines, static merges, AdaMerging, the WEMoE family, SMILE, the diagnostic rows), evaluates
/// every task, and records a <see cref="MethodResult"/>. Owns the task heads and the distillation teachers.
/// </summary>
sealed class TaskPoolRows : IDisposable
{
    readonly BenchmarkOptions o;
    readonly IReadOnlyList<TaskTensors> tasks;
    readonly ModelZoo zoo;
    readonly Action<string> log;
    readonly Action<string> stage;
    readonly ClipVisionConfig cfg;
    readonly ImagePreprocess preprocess;
    readonly List<string> names;
    readonly Dictionary<string, ClassificationHead> heads;
    readonly List<TaskData> testData;
    readonly InMemorySource preSource;
    readonly List<ITensorSource> expertSources;
    readonly List<MethodResult> methods = [];
    // The experts as teachers of the distillation objective, built on first use by a method's body: outside
    // the adaptation steps' dispose scopes, which would otherwise free their weights after the first step.
    ExpertTeachers? teachers;

    public TaskPoolRows(BenchmarkOptions options, IReadOnlyList<TaskTensors> tasks, ModelZoo zoo, Action<string> log, Action<string> stage)
    {
        o = options;
        this.tasks = tasks;
        this.zoo = zoo;
        this.log = log;
        this.stage = stage;
        cfg = o.Zoo.Model.Validate();
        preprocess = o.Zoo.Preprocess();
        names = tasks.Select(t => t.Task.Name).ToList();
        heads = names.Select((t, i) => (t, ZooBuilder.ToHead(t, zoo.Heads[i]))).ToDictionary(p => p.t, p => p.Item2);
        // Views of the task tensors (not owned: the tasks dispose them).
        testData = tasks.Select(t => new TaskData(t.Task.Name, t.TestImages, t.TestLabels)).ToList();
        preSource = new InMemorySource("pretrained", zoo.Pretrained);
        expertSources = zoo.Experts.Select((e, i) => (ITensorSource)new InMemorySource(names[i], e)).ToList();
    }

    /// <summary>The rows recorded so far, in the order they ran.</summary>
    public IReadOnlyList<MethodResult> Methods => methods;

    int N => tasks.Count;

    static readonly Dictionary<string, string> NoConfig = [];

    double Score(nn.Module<Tensor, Tensor> model, int task) =>
        100.0 * Evaluator.Score(model, heads[names[task]], testData[task], 500, CPU, preprocess).Accuracy;

    double[] Eval(nn.Module<Tensor, Tensor> model) => Enumerable.Range(0, N).Select(i => Score(model, i)).ToArray();

    ClipVisionModel Plain(IReadOnlyDictionary<string, Tensor> weights, string label)
    {
        var m = new ClipVisionModel(cfg);
        m.LoadWeights(weights, label);
        return m;
    }

    double[] EvalWeights(IReadOnlyDictionary<string, Tensor> weights, string label)
    {
        using var m = Plain(weights, label);
        return Eval(m);
    }

    double[] EvalRecipe(MergeRecipe recipe)
    {
        var merged = TaskPoolRecipes.Run(recipe, preSource, expertSources, o.Zoo.Seed);
        try { return EvalWeights(merged, recipe.Name); }
        finally { foreach (var t in merged.Values) t.Dispose(); }
    }

    Func<int, Tensor, Tensor>? TeacherFor(AdaptationSettings a)
    {
        if (a.Options.Objective != AdaptObjective.Distillation) return null;
        teachers ??= new ExpertTeachers(zoo.Experts.Select((e, i) => Plain(e, names[i])).ToList(), names.Select(n => heads[n]).ToList());
        return teachers.AsFunction();
    }

    AdaptationReport Guarded(AdaptationSettings s, Func<IAdaptMonitor, AdaptResult> run)
    {
        using var guard = new CollapseGuard(s, tasks.Select(t => TaskTensors.ToInput(t.TestImages.narrow(0, 0, Math.Min(s.ProbeImages, t.TestImages.shape[0])))).ToList(), log);
        run(guard);
        return guard.Report();
    }

    MoeModel Upscale(MoeKind kind, Func<UpscaleSpec, UpscaleSpec>? extra = null)
    {
        var spec = new UpscaleSpec
        {
            Kind = kind, Modules = ["*.mlp"], RouterDepth = 2, InitLambda = o.Lambda, RestLambda = o.Lambda,
            Seed = o.Zoo.Seed + 11, ExpertNames = names,
        };
        return Upscaler.Upscale(cfg, preSource, expertSources, extra is null ? spec : extra(spec));
    }

    /// <summary>Runs and records one row, unless the options leave it out.</summary>
    void Add(string name, Func<double[]> body, Dictionary<string, string> config, Func<string>? notes = null)
    {
        if (o.Methods is not null && !o.Methods.Contains(name)) return;
        var t = Stopwatch.StartNew();
        // No dispose scope here: every method disposes what it builds, and the executor's and the core
        // loop's threads must not touch a scope this thread holds open.
        var acc = body();
        methods.Add(new MethodResult(name, acc, t.Elapsed.TotalSeconds, config, notes?.Invoke() ?? ""));
        log($"{name}: avg {acc.Average():F1}  [{string.Join(" ", acc.Select(a => a.ToString("F1")))}]  ({t.Elapsed.TotalSeconds:F1} s)");
    }

    /// <summary>Pretrained and each task's own expert.</summary>
    public void AddBaselines()
    {
        Add("Pretrained", () => EvalWeights(zoo.Pretrained, "pretrained"), NoConfig);
        Add("Individual", () => Enumerable.Range(0, N).Select(i =>
        {
            using var m = Plain(zoo.Experts[i], names[i]);
            return Score(m, i);
        }).ToArray(), NoConfig);
        stage("pretrained + individual");
    }

    /// <summary>Simple average, task arithmetic, TIES and DARE-TIES, from the method registry.</summary>
    public void AddStaticMerges()
    {
        Add("Simple Average", () => EvalRecipe(TaskPoolRecipes.SimpleAverage()), NoConfig);
        Add("Task Arithmetic", () => EvalRecipe(TaskPoolRecipes.TaskArithmetic(o.Lambda)), new() { ["lambda"] = $"{o.Lambda}" });
        Add("TIES-Merging", () => EvalRecipe(TaskPoolRecipes.Ties(o.TiesDensity, o.Lambda)),
            new() { ["lambda"] = $"{o.Lambda}", ["density"] = $"{o.TiesDensity}", ["merge"] = "sum" });
        Add("DARE-TIES", () => EvalRecipe(TaskPoolRecipes.DareTies(o.DareDensity, o.Lambda)),
            new() { ["lambda"] = $"{o.Lambda}", ["density"] = $"{o.DareDensity}", ["merge"] = "sum" });
        stage("static merges");
    }

    /// <summary>Task-wise and layer-wise AdaMerging under the collapse guard.</summary>
    public void AddAdaMerging()
    {
        foreach (var layerWise in new[] { false, true })
        {
            var s = layerWise ? o.AdaMergingLayerWise : o.AdaMergingTaskWise;
            AdaptationReport? rep = null;
            Add(layerWise ? "AdaMerging (layer-wise)" : "AdaMerging (task-wise)", () =>
            {
                AdaMergingResult? r = null;
                rep = Guarded(s, guard =>
                {
                    r = AdaMerging.Run(cfg, preSource, expertSources, heads, testData, preprocess, s.Options,
                        new AdaMergingOptions(layerWise ? AdaMergingGranularity.LayerWise : AdaMergingGranularity.TaskWise, o.Lambda, Clamp: true),
                        monitor: guard, teacher: TeacherFor(s));
                    return r.Adapt;
                });
                using var model = r!.Model;
                r.Lambdas.Dispose();
                return Eval(model);
            }, TaskPoolBenchmark.AdaptConfig(s), () => TaskPoolBenchmark.Describe(rep!));
            stage(layerWise ? "adamerging layer-wise" : "adamerging task-wise");
        }
    }

    /// <summary>
    /// One WEMoE-family row: build, train the routers (under the collapse guard when the objective is label-free),
    /// record the mean routes, evaluate.
    /// </summary>
    void AddWeMoE(string name, string stageName, Func<MoeModel> build, AdaptationSettings s, IReadOnlyList<TaskData> data,
        Dictionary<string, string> config)
    {
        bool guarded = s.Options.Objective != AdaptObjective.Supervised;
        AdaptationReport? rep = null;
        RouteSummary? routes = null;
        Add(name, () =>
        {
            var moe = build();
            using var model = moe.Model;
            var teacher = TeacherFor(s);
            if (guarded) rep = Guarded(s, guard => RouterAdaptation.Run(moe, heads, data, preprocess, s.Options, monitor: guard, teacher: teacher));
            else RouterAdaptation.Run(moe, heads, data, preprocess, s.Options, teacher: teacher);
            routes = RouteSummary.Measure(moe, testData, preprocess, o.WeMoE.ProbeImages);
            log($"  last-layer route of each task's own expert: {routes.LastLayerDiagonal()}");
            config["mean_routes_per_layer"] = JsonSerializer.Serialize(routes.Layers.Select(l => l.Select(r => r.Select(v => Math.Round(v, 3)))));
            return Eval(model);
        }, config, () => (guarded ? TaskPoolBenchmark.Describe(rep!) : $"{s.Options.Steps} steps") + $"; last-layer route of each task's own expert: {routes!.LastLayerDiagonal()}");
        stage(stageName);
    }

    Dictionary<string, string> WeMoEConfig(AdaptationSettings s)
    {
        var config = TaskPoolBenchmark.AdaptConfig(s);
        config["init_lambda"] = $"{o.Lambda}";
        config["router_depth"] = "2";
        return config;
    }

    /// <summary>WEMoE and E-WEMoE with the papers' label-free objective (as the options set it).</summary>
    public void AddWeMoEFamily()
    {
        AddWeMoE("WEMoE", "wemoe", () => Upscale(MoeKind.WeMoE), o.WeMoE, testData, WeMoEConfig(o.WeMoE));
        var sparseConfig = WeMoEConfig(o.WeMoE);
        sparseConfig["task_vector_density"] = $"{o.EWeMoEDensity}";
        sparseConfig["shared_router"] = "true";
        AddWeMoE("E-WEMoE", "e-wemoe", () => Upscale(MoeKind.EWeMoE, sp => sp with { KeepFraction = o.EWeMoEDensity, SharedRouter = true }),
            o.WeMoE, testData, sparseConfig);
    }

    /// <summary>SMILE: training-free low-rank experts.</summary>
    public void AddSmile()
    {
        Add("SMILE", () =>
        {
            var moe = Upscale(MoeKind.Smile, sp => sp with { Rank = o.SmileRank, GateRank = o.SmileGateRank, Routing = RouterSelection.TopKOf(o.SmileTopK) });
            using var model = moe.Model;
            return Eval(model);
        }, new() { ["rank"] = $"{o.SmileRank}", ["gate_rank"] = $"{o.SmileGateRank}", ["top_k"] = $"{o.SmileTopK}" });
        stage("smile");
    }

    /// <summary>Our rows beside the papers': WEMoE distilled from the experts, the supervised-router bound, oracle routing.</summary>
    public void AddDiagnostics()
    {
        // WEMoE with its routers distilled from the experts: for each task's unlabelled images, the KL divergence
        // from that task's expert's predictions replaces the entropy objective. Label-free, and it needs nothing
        // the other methods lack (the experts, and which task a batch comes from, as for every adaptive method).
        var distilled = o.WeMoE with { Options = o.WeMoE.Options with { Objective = AdaptObjective.Distillation, Steps = o.DistillationSteps } };
        AddWeMoE("WEMoE (expert distillation)", "wemoe expert distillation", () => Upscale(MoeKind.WeMoE), distilled, testData, WeMoEConfig(distilled));

        // A diagnostic bound, not a merging method: the same WEMoE with its routers trained on the tasks'
        // labelled training images (cross-entropy). Between label-free WEMoE and oracle routing, it tells how much
        // of the gap is the label-free objective and how much the router itself.
        var supervised = o.WeMoE with { Options = o.WeMoE.Options with { Objective = AdaptObjective.Supervised } };
        var supervisedConfig = TaskPoolBenchmark.AdaptConfig(supervised);
        supervisedConfig["data"] = "each task's labelled training images (not the test images)";
        // Views of the task tensors (not owned: the tasks dispose them).
        var train = tasks.Select(t => new TaskData(t.Task.Name, t.TrainImages, t.TrainLabels)).ToList();
        AddWeMoE("WEMoE (supervised routers)", "wemoe supervised routers", () => Upscale(MoeKind.WeMoE), supervised, train, supervisedConfig);

        // Oracle routing: an unadapted WEMoE (non-MLP parameters TA(lambda)) whose routing is forced to each
        // task's own expert for that task's inputs: what a perfect router could reach.
        Add("Oracle routing", () =>
        {
            var moe = Upscale(MoeKind.WeMoE);
            using var model = moe.Model;
            try
            {
                return Enumerable.Range(0, N).Select(i =>
                {
                    using var route = nn.functional.one_hot(tensor(new long[] { i }), N).to_type(ScalarType.Float32);
                    moe.ForceRoutes(route);
                    return Score(model, i);
                }).ToArray();
            }
            finally { moe.ForceRoutes(null); }
        }, new() { ["routing"] = "each task's inputs to its own expert MLPs (MoeModel.ForceRoutes); non-MLP parameters TA(lambda)" });
        stage("oracle routing");
    }

    public void Dispose()
    {
        teachers?.Dispose();
        foreach (var h in heads.Values) h.Dispose();
    }
}
