using System.Globalization;
using MergeDsl.Core.Checkpoints;
using MergeDsl.Core.Ir;

namespace MergeDsl.Core.Compilation;

/// <summary>
/// Compiles a recipe against the inputs' headers only (names, shapes, dtypes; no tensor data) into
/// a <see cref="MergePlan"/>. Every problem is a <see cref="RecipeException"/> naming the parameter
/// and model, raised before anything is read.
/// </summary>
public static class Compiler
{
    /// <summary>Floating-point dtypes the merge arithmetic accepts.</summary>
    public static bool IsMergeable(DType d) => d is DType.F64 or DType.F32 or DType.F16 or DType.BF16;

    /// <summary>Compiles <paramref name="recipe"/> for <paramref name="inputs"/>.</summary>
    public static MergePlan Compile(MergeRecipe recipe, MergeInputs inputs, CompileOptions? options = null)
    {
        options ??= CompileOptions.Default;
        var experts = SelectExperts(recipe, inputs);
        var models = new List<NamedSource>();
        if (inputs.Base is not null) models.Add(inputs.Base);
        models.AddRange(experts);
        if (models.Count == 0) throw new RecipeException("no input models");
        var duplicate = models.GroupBy(m => m.Label).FirstOrDefault(g => g.Count() > 1);
        if (duplicate is not null) throw new RecipeException($"model label '{duplicate.Key}' is used by more than one input");
        if (options.OutputDType is { } od && !IsMergeable(od))
            throw new RecipeException($"output dtype {DTypes.ToSafetensorsName(od)} is not a floating-point type");

        var ctx = new Context(recipe, models, inputs.Base is not null, experts.Count, options);
        var reference = models[0];
        var outputs = OutputTensors(recipe, reference);
        // Restacked layers read other layers of models of other depths: each read checks its own tensor instead.
        if (recipe.OutputLayers is null) CheckTensorSets(ctx);

        var outputNames = outputs.Select(o => o.Name).ToHashSet(StringComparer.Ordinal);
        foreach (var rule in recipe.Rules.Where(r => r.Pattern.IsLiteral))
            if (!outputNames.Contains(rule.Pattern.Text))
                throw new RecipeException(rule.Pattern.Text, $"unknown parameter: rule '{rule.Pattern.Text}' names no tensor of {(recipe.OutputLayers is null ? $"{Role(ctx, 0)} '{reference.Label}'" : "the output")}");

        var tensors = new List<TensorPlan>();
        foreach (var info in outputs)
            tensors.Add(CompileTensor(ctx, info, tensors.Count));

        var groups = ctx.Groups.Select((g, i) => new GlobalGroup(i, g.Key, g.Density, g.Members)
        {
            Positions = g.Members.Select(m => tensors[m.Tensor].Nodes[m.Node].Index).Distinct().Order().ToList(),
            DependsOn = g.DependsOn.Order().ToList(),
        }).ToList();
        return new MergePlan(recipe, models, inputs.Base is not null, tensors, groups);
    }

    /// <summary>
    /// The output's tensors in write order, each with the shape and dtype it is checked against: the reference
    /// model's tensors, or with <see cref="MergeRecipe.OutputLayers"/> its tensors outside the layers (names with
    /// "embed" first, the others last, as mergekit writes embeddings, layers, final norm and head) around its
    /// layer-0 tensors renumbered for every output layer. Headers only.
    /// </summary>
    public static IReadOnlyList<TensorInfo> OutputTensors(MergeRecipe recipe, NamedSource reference)
    {
        var all = reference.Source.Tensors;
        if (recipe.OutputLayers is not { } n) return all;
        if (n < 1) throw new RecipeException($"output layers: {n} is not a positive number of layers");
        var layer0 = all.Where(t => ScaleResolver.LayerIndex(t.Name) == 0).ToList();
        if (layer0.Count == 0)
            throw new RecipeException($"output layers: '{reference.Label}' has no layer 0 (no tensor named like 'model.layers.0.…') to repeat");
        var outside = all.Where(t => ScaleResolver.LayerIndex(t.Name) is null).ToList();
        bool IsEmbedding(TensorInfo t) => t.Name.Contains("embed", StringComparison.Ordinal);
        var result = outside.Where(IsEmbedding).ToList();
        for (int layer = 0; layer < n; layer++)
            result.AddRange(layer0.Select(t => t with { Name = ScaleResolver.ShiftLayer(t.Name, layer)! }));
        result.AddRange(outside.Where(t => !IsEmbedding(t)));
        return result;
    }

    /// <summary>
    /// Every tensor must be in every model: the output follows the reference model's names, so a tensor
    /// it lacks would silently vanish, and one an expert lacks cannot be merged. With
    /// <see cref="CompileOptions.TakeMissingFromBase"/>, tensors of the base that experts lack are copied
    /// from the base. Headers only; the first problem is reported, with how many tensors have one.
    /// </summary>
    static void CheckTensorSets(Context ctx)
    {
        var models = ctx.Models;
        var names = models.Select(m => m.Source.Tensors.Select(t => t.Name).ToHashSet(StringComparer.Ordinal)).ToList();
        if (ctx.Options.TakeMissingFromBase && !ctx.HasBase)
            throw new RecipeException("taking missing tensors from the base needs a base model");
        string Who(int i) => $"{Role(ctx, i)} '{models[i].Label}'";
        var problems = new List<(string Name, string Problem)>();
        foreach (var info in models[0].Source.Tensors)
        {
            int lacking = Enumerable.Range(1, models.Count - 1).FirstOrDefault(i => !names[i].Contains(info.Name));
            if (lacking == 0) continue;
            if (ctx.Options.TakeMissingFromBase) ctx.FromBase[info.Name] = $"missing from {Who(lacking)}: taken from {Who(0)}";
            else problems.Add((info.Name, $"missing from {Who(lacking)} (present in {Who(0)}); the missing-from-base option takes such tensors from the base"));
        }
        var seen = new HashSet<string>(names[0], StringComparer.Ordinal);
        for (int i = 1; i < models.Count; i++)
            foreach (var info in models[i].Source.Tensors)
                if (seen.Add(info.Name))
                    problems.Add((info.Name, $"missing from {Who(0)} (present in {Who(i)}); the output has the tensors of the {Role(ctx, 0)}, so it would be dropped"));
        if (problems.Count == 0) return;
        var (name, problem) = problems[0];
        string more = problems.Count == 1 ? "" : $" ({problems.Count - 1} more tensor{(problems.Count == 2 ? "" : "s")} not in every model)";
        throw new RecipeException(name, problem + more);
    }

    static List<NamedSource> SelectExperts(MergeRecipe recipe, MergeInputs inputs)
    {
        if (recipe.ExpertLabels is null) return inputs.Experts.ToList();
        var chosen = new List<NamedSource>();
        foreach (var label in recipe.ExpertLabels)
        {
            var m = inputs.Experts.FirstOrDefault(e => e.Label == label)
                ?? throw new RecipeException($"expert '{label}' selected by the recipe is not among the inputs ({string.Join(", ", inputs.Experts.Select(e => $"'{e.Label}'"))})");
            chosen.Add(m);
        }
        return chosen;
    }

    static string Role(Context ctx, int model) => ctx.HasBase && model == 0 ? "base" : "expert";

    sealed class GroupBuilder(string key, double density)
    {
        public string Key { get; } = key;
        public double Density { get; } = density;
        public List<(int Tensor, int Node)> Members { get; } = [];
        public HashSet<int> DependsOn { get; } = [];
    }

    sealed class Context(MergeRecipe recipe, List<NamedSource> models, bool hasBase, int expertCount, CompileOptions options)
    {
        public MergeRecipe Recipe { get; } = recipe;
        public List<NamedSource> Models { get; } = models;
        public bool HasBase { get; } = hasBase;
        public int ExpertCount { get; } = expertCount;
        public CompileOptions Options { get; } = options;
        public List<GroupBuilder> Groups { get; } = [];
        /// <summary>Tensors copied from the base because an expert lacks them, with the reason shown as their rule.</summary>
        public Dictionary<string, string> FromBase { get; } = new(StringComparer.Ordinal);
        public Dictionary<string, int> GroupByKey { get; } = [];
        public int LayerCount { get; } = recipe.OutputLayers ?? 1 + models[0].Source.Tensors.Select(t => ScaleResolver.LayerIndex(t.Name) ?? -1).DefaultIfEmpty(-1).Max();
    }

    static TensorPlan CompileTensor(Context ctx, TensorInfo refInfo, int tensorIndex)
    {
        var b = new Builder(ctx, refInfo, tensorIndex);
        string ruleText = "fallback";
        Expr expr = ctx.Recipe.Fallback;
        foreach (var rule in ctx.Recipe.Rules)
            if (rule.Pattern.Matches(refInfo.Name)) { expr = rule.Expr; ruleText = rule.Pattern.Text; break; }

        int output;
        DType outDType;
        if (ctx.FromBase.TryGetValue(refInfo.Name, out var reason))
        {
            output = b.Load(0, raw: true);
            outDType = IsMergeable(refInfo.DType) ? ctx.Options.OutputDType ?? refInfo.DType : refInfo.DType;
            ruleText = reason;
        }
        else if (!IsMergeable(refInfo.DType))
        {
            if (!ctx.Options.CopyNonFloat)
                throw new RecipeException(refInfo.Name, $"dtype {DTypes.ToSafetensorsName(refInfo.DType)} in {Role(ctx, 0)} '{ctx.Models[0].Label}' cannot be merged (only F64, F32, F16, BF16)");
            output = b.Load(0, raw: true);
            outDType = refInfo.DType;
            ruleText = $"non-float copy from '{ctx.Models[0].Label}'";
        }
        else
        {
            if (expr.Kind != ValueKind.Tensor)
                throw new RecipeException(refInfo.Name, $"rule '{ruleText}' yields a stack, but a parameter needs a tensor (reduce it with sum, mean, ...): {expr}");
            output = b.Top(expr);
            var outNode = b.Nodes[output];
            outDType = outNode.Op == OpKind.Load
                ? (IsMergeable(b.LoadedDType(outNode)) ? ctx.Options.OutputDType ?? b.LoadedDType(outNode) : b.LoadedDType(outNode))
                : ctx.Options.OutputDType ?? refInfo.DType;
        }
        var nodes = b.Nodes.ToList();
        nodes = Prune(nodes, output, out output, b.GlobalNodes, ctx, tensorIndex);
        long inputBytes = nodes.Where(n => n.Op == OpKind.Load).Sum(b.LoadBytes);
        return new TensorPlan(refInfo.Name, refInfo.Shape, outDType, nodes, output, ruleText) { InputBytes = inputBytes, InputDType = refInfo.DType };
    }

    /// <summary>Drops nodes the output does not need (e.g. a Pack whose entries were all picked) and renumbers.</summary>
    static List<PlanNode> Prune(List<PlanNode> nodes, int output, out int newOutput, List<(int Node, int Group)> globals, Context ctx, int tensorIndex)
    {
        var live = new bool[nodes.Count];
        var stack = new Stack<int>();
        stack.Push(output);
        while (stack.Count > 0)
        {
            int id = stack.Pop();
            if (live[id]) continue;
            live[id] = true;
            foreach (int i in nodes[id].Inputs) stack.Push(i);
        }
        var map = new int[nodes.Count];
        var result = new List<PlanNode>();
        foreach (var n in nodes)
        {
            if (!live[n.Id]) { map[n.Id] = -1; continue; }
            map[n.Id] = result.Count;
            result.Add(n with { Id = result.Count, Inputs = n.Inputs.Select(i => map[i]).ToArray() });
        }
        foreach (var (node, group) in globals)
            if (live[node]) ctx.Groups[group].Members.Add((tensorIndex, map[node]));
        newOutput = map[output];
        return result;
    }

    sealed class Builder(Context ctx, TensorInfo refInfo, int tensorIndex)
    {
        readonly Dictionary<string, int> memo = [];
        public List<PlanNode> Nodes { get; } = [];
        public List<(int Node, int Group)> GlobalNodes { get; } = [];
        string Name => refInfo.Name;
        int TensorIndex => tensorIndex;
        /// <summary>The tensor inputs are read from: the parameter's own name, unless inside <see cref="ShiftLayers"/>.</summary>
        string readName = refInfo.Name;

        RecipeException Error(string problem) => new(Name, readName == Name ? problem : $"{problem} (reading {readName})");

        int Add(OpKind op, ValueKind kind, int[] inputs, string extra, Func<PlanNode, PlanNode>? init = null)
        {
            string key = $"{op}|{extra}|{string.Join(",", inputs)}";
            if (memo.TryGetValue(key, out int id)) return id;
            var node = new PlanNode(Nodes.Count, op, kind, inputs);
            if (init is not null) node = init(node);
            Nodes.Add(node);
            memo[key] = node.Id;
            return node.Id;
        }

        TensorInfo InfoOf(int model, string? name = null)
        {
            var m = ctx.Models[model];
            if (!m.Source.TryGetInfo(name ?? readName, out var info))
                throw Error($"missing from {Role(ctx, model)} '{m.Label}'");
            return info;
        }

        /// <summary>The stored dtype a load node reads.</summary>
        public DType LoadedDType(PlanNode load) => InfoOf(load.Model, load.Source ?? Name).DType;
        /// <summary>The bytes a load node reads.</summary>
        public long LoadBytes(PlanNode load) => InfoOf(load.Model, load.Source ?? Name).ByteLength;

        /// <summary>The raw tensor (raw: true) or its compute-dtype cast.</summary>
        public int Load(int model, bool raw = false)
        {
            var info = InfoOf(model);
            if (!info.Shape.SequenceEqual(refInfo.Shape))
                throw Error($"shape {info.ShapeText} in {Role(ctx, model)} '{ctx.Models[model].Label}' differs from {refInfo.ShapeText} in {Role(ctx, 0)} '{ctx.Models[0].Label}'{(ctx.Recipe.OutputLayers is null ? "" : " (its layer 0: every output layer has that shape)")}");
            string? source = readName == Name ? null : readName;
            int load = Add(OpKind.Load, ValueKind.Tensor, [], $"{model.ToString(CultureInfo.InvariantCulture)}@{readName}", n => n with { Model = model, Source = source });
            if (raw) return load;
            if (!IsMergeable(info.DType))
                throw Error($"dtype {DTypes.ToSafetensorsName(info.DType)} in {Role(ctx, model)} '{ctx.Models[model].Label}' cannot be merged (only F64, F32, F16, BF16)");
            return Add(OpKind.Cast, ValueKind.Tensor, [load], "");
        }

        int Pack(IReadOnlyList<int> items) => Add(OpKind.Pack, ValueKind.Stack, items.ToArray(), "", n => n with { Size = items.Count });

        /// <summary>The entries of a stack node as tensor nodes.</summary>
        IReadOnlyList<int> Elements(int stack)
        {
            var n = Nodes[stack];
            if (n.Op == OpKind.Pack) return n.Inputs;
            return Enumerable.Range(0, n.Size)
                .Select(i => Add(OpKind.Pick, ValueKind.Tensor, [stack], i.ToString(CultureInfo.InvariantCulture), p => p with { Index = i }))
                .ToArray();
        }

        int Size(int id) => Nodes[id].Size;

        int ExpectTensor(Expr e, string what)
        {
            if (e.Kind != ValueKind.Tensor) throw Error($"{what} expects a tensor, got a stack: {e}");
            return Lower(e);
        }

        int ExpectStack(Expr e, string what)
        {
            if (e.Kind != ValueKind.Stack) throw Error($"{what} expects a stack, got a tensor: {e}");
            return Lower(e);
        }

        int BaseIndex()
        {
            if (!ctx.HasBase) throw Error("the recipe uses the base model, but no base was given");
            return 0;
        }

        public int Lower(Expr e) => e switch
        {
            BaseModel => Load(BaseIndex()),
            ModelTensor m => Load(ModelIndex(m.Model)),
            Experts => ctx.ExpertCount == 0
                ? throw Error("the recipe uses the experts, but none were given")
                : Pack(Enumerable.Range(ctx.HasBase ? 1 : 0, ctx.ExpertCount).Select(i => Load(i)).ToArray()),
            StackOf s => Pack(s.Items.SelectMany(i => i.Kind == ValueKind.Tensor ? [Lower(i)] : Elements(Lower(i))).ToArray()),
            Pick p => PickAt(ExpectStack(p.Stack, "pick"), p.Index),
            TaskVectors t => TaskVectors(t),
            Sparsify s => SparsifyNode(s),
            ElectSign s => ElectSignNode(s),
            Scale s => ScaleNode(s),
            Reduce r => ReduceNode(r),
            Weighted w => WeightedNode(w),
            DisjointWeightedMean w => DisjointWeightedNode(w),
            Ir.Add a => AddNode(a),
            Lerp l => Interp(OpKind.Lerp, l.Pair, Factor(l.T, "lerp: t"), "lerp"),
            Slerp s => Interp(OpKind.Slerp, s.Pair, Factor(s.T, "slerp: t"), "slerp"),
            Combine c => CombineNode(c),
            RescaleL1 r => RescaleL1Node(r),
            ModelStock m => ModelStockNode(m),
            Passthrough p => ExpectTensor(p.Source, "passthrough"),
            ShiftLayers s => Shifted(s, () => Lower(s.Value)),
            _ => throw Error($"unknown expression {e.GetType().Name}"),
        };

        /// <summary>Lowers with inputs read <see cref="ShiftLayers.Offset"/> layers further on.</summary>
        int Shifted(ShiftLayers s, Func<int> lower)
        {
            string? shifted = ScaleResolver.ShiftLayer(readName, s.Offset);
            if (shifted is null) throw Error($"shiftLayers {s.Offset}: the parameter is outside the layers (no '.N.' in its name)");
            if (ScaleResolver.LayerIndex(shifted) < 0)
                throw Error($"shiftLayers {s.Offset}: layer {ScaleResolver.LayerIndex(readName)} {s.Offset:+0;-0} is before layer 0");
            string saved = readName;
            readName = shifted;
            try { return lower(); }
            finally { readName = saved; }
        }

        int ModelIndex(string label)
        {
            int i = ctx.Models.FindIndex(m => m.Label == label);
            if (i < 0)
                throw Error($"model '{label}' is not among the inputs ({string.Join(", ", ctx.Models.Select((m, j) => $"{Role(ctx, j)} '{m.Label}'"))})");
            return i;
        }

        int PickAt(int stack, int index)
        {
            if (index < 0 || index >= Size(stack)) throw Error($"pick {index}: the stack has {Size(stack)} entries");
            return Elements(stack)[index];
        }

        int TaskVectors(TaskVectors t)
        {
            int s = ExpectStack(t.Stack, "taskVectors");
            int b = ExpectTensor(t.Base, "taskVectors (origin)");
            return Pack(Elements(s).Select(x => Add(OpKind.Sub, ValueKind.Tensor, [x, b], "")).ToArray());
        }

        void CheckUnit(string what, double v, bool includeZero = false)
        {
            bool ok = includeZero ? v >= 0 && v < 1 : v > 0 && v <= 1;
            if (!ok || double.IsNaN(v))
                throw Error($"{what} {ExprText.Num(v)} is outside {(includeZero ? "[0, 1)" : "(0, 1]")}");
        }

        /// <summary>A factor's value for this parameter; it must be finite.</summary>
        double Factor(ScaleFactor f, string what)
        {
            double v = ScaleResolver.Resolve(f, Name, ctx.LayerCount);
            if (!double.IsFinite(v)) throw Error($"{what} {ExprText.Num(v)} is not finite");
            return v;
        }

        int SparsifyNode(Sparsify s)
        {
            if (s.Factors is not null && s.Method is TopK { Scope: TopKScope.Global })
                throw Error($"{s.Method}: a global top-k takes one density for the whole model; it cannot vary by parameter");
            var m = s.Factors is null ? s.Method : s.Factors.Apply(s.Method, f => Factor(f, $"{s.Method}: parameter"));
            CheckUnit($"{m}: density", m.Density);
            switch (m)
            {
                case TopK { Scope: TopKScope.Global, Rounding: KeepRounding.Floor }:
                    throw Error($"{m}: floor rounding applies to per-tensor top-k only");
                case Breadcrumbs bc:
                    CheckUnit($"{m}: gamma", bc.Gamma, includeZero: true);
                    break;
                case Della d:
                    if (!(d.Epsilon >= 0)) throw Error($"{m}: epsilon {ExprText.Num(d.Epsilon)} must be ≥ 0");
                    if (d.Density < 1 && !(d.Density - d.Epsilon > 0 && d.Density + d.Epsilon <= 1))
                        throw Error($"{m}: density ± epsilon must stay inside (0, 1] (density {ExprText.Num(d.Density)}, epsilon {ExprText.Num(d.Epsilon)})");
                    break;
            }
            int v = Lower(s.Value);
            var items = s.Value.Kind == ValueKind.Tensor ? [v] : Elements(v);
            var outs = new int[items.Count];
            int group = -1;
            if (m is TopK { Scope: TopKScope.Global } && m.Density < 1)
            {
                string key = s.ToString();
                if (!ctx.GroupByKey.TryGetValue(key, out group))
                {
                    group = ctx.Groups.Count;
                    ctx.Groups.Add(new GroupBuilder(key, m.Density));
                    ctx.GroupByKey[key] = group;
                }
                foreach (int inner in GlobalNodes.Select(g => g.Group).Distinct())
                    if (inner != group && Reaches(v, GlobalNodes.Where(g => g.Group == inner).Select(g => g.Node))) ctx.Groups[group].DependsOn.Add(inner);
                if (ctx.Groups[group].DependsOn.Contains(group)) throw Error($"{m} is nested inside itself");
            }
            for (int i = 0; i < items.Count; i++)
            {
                int pos = i;
                int x = items[i];
                outs[i] = m switch
                {
                    TopK { Density: >= 1 } => x,
                    TopK { Scope: TopKScope.Global } => AddGlobal(x, pos, m, group),
                    TopK => Add(OpKind.TopK, ValueKind.Tensor, [x], m.ToString(), n => n with { Sparsifier = m }),
                    Bernoulli => Add(OpKind.Dare, ValueKind.Tensor, [x], $"{m}@{pos}", n => n with { Sparsifier = m, Index = pos }),
                    Breadcrumbs => Add(OpKind.Breadcrumbs, ValueKind.Tensor, [x], m.ToString(), n => n with { Sparsifier = m }),
                    Della => Add(OpKind.Della, ValueKind.Tensor, [x], $"{m}@{pos}", n => n with { Sparsifier = m, Index = pos }),
                    _ => throw Error($"unknown sparsifier {m.GetType().Name}"),
                };
            }
            return s.Value.Kind == ValueKind.Tensor ? outs[0] : Pack(outs);
        }

        bool Reaches(int from, IEnumerable<int> targets)
        {
            var set = targets.ToHashSet();
            var seen = new HashSet<int>();
            var st = new Stack<int>();
            st.Push(from);
            while (st.Count > 0)
            {
                int id = st.Pop();
                if (!seen.Add(id)) continue;
                if (set.Contains(id)) return true;
                foreach (int i in Nodes[id].Inputs) st.Push(i);
            }
            return false;
        }

        int AddGlobal(int x, int pos, Sparsifier m, int group)
        {
            int before = Nodes.Count;
            int id = Add(OpKind.GlobalTopK, ValueKind.Tensor, [x], $"{group}@{pos}", n => n with { Sparsifier = m, Index = pos, Group = group });
            if (id == before) GlobalNodes.Add((id, group));
            return id;
        }

        int ElectSignNode(ElectSign s)
        {
            int st = ExpectStack(s.Stack, "electSign");
            return Add(OpKind.ElectSign, ValueKind.Stack, [st], s.Rule.ToString() + (s.Tie == SignTie.Positive ? "+" : ""),
                n => n with { Sign = s.Rule, Tie = s.Tie, Size = Size(st) });
        }

        int ScaleNode(Scale s)
        {
            double f = ScaleResolver.Resolve(s.Factor, Name, ctx.LayerCount);
            if (!double.IsFinite(f)) throw Error($"scale factor {ExprText.Num(f)} is not finite");
            int v = Lower(s.Value);
            int One(int x) => f == 1.0 ? x : Add(OpKind.Scale, ValueKind.Tensor, [x], ExprText.Num(f), n => n with { Scalar = f });
            return s.Value.Kind == ValueKind.Tensor ? One(v) : Pack(Elements(v).Select(One).ToArray());
        }

        int ReduceNode(Reduce r)
        {
            int st = ExpectStack(r.Stack, r.Op.ToString().ToLowerInvariant());
            var op = r.Op switch { Reduction.Sum => OpKind.Sum, Reduction.Mean => OpKind.Mean, _ => OpKind.DisjointMean };
            return Add(op, ValueKind.Tensor, [st], "");
        }

        int WeightedNode(Weighted w)
        {
            int st = ExpectStack(w.Stack, "weighted");
            if (w.Weights.Count != Size(st))
                throw Error($"weighted: {w.Weights.Count} weights for a stack of {Size(st)} models");
            if (w.Weights.Any(x => !double.IsFinite(x))) throw Error("weighted: the weights must be finite numbers");
            return Add(OpKind.Weighted, ValueKind.Tensor, [st], string.Join(",", w.Weights.Select(ExprText.Num)), n => n with { Weights = w.Weights.ToArray() });
        }

        int DisjointWeightedNode(DisjointWeightedMean w)
        {
            int st = ExpectStack(w.Stack, "disjointWeightedMean");
            if (w.Weights.Count != Size(st))
                throw Error($"disjointWeightedMean: {w.Weights.Count} weights for a stack of {Size(st)} models");
            if (w.Weights.Any(x => !double.IsFinite(x))) throw Error("disjointWeightedMean: the weights must be finite numbers");
            return Add(OpKind.DisjointWeightedMean, ValueKind.Tensor, [st], string.Join(",", w.Weights.Select(ExprText.Num)),
                n => n with { Weights = w.Weights.ToArray() });
        }

        int AddNode(Ir.Add a)
        {
            int l = Lower(a.Left), r = Lower(a.Right);
            int Plus(int x, int y) => Add(OpKind.Add, ValueKind.Tensor, [x, y], "");
            return (a.Left.Kind, a.Right.Kind) switch
            {
                (ValueKind.Tensor, ValueKind.Tensor) => Plus(l, r),
                (ValueKind.Stack, ValueKind.Tensor) => Pack(Elements(l).Select(x => Plus(x, r)).ToArray()),
                (ValueKind.Stack, ValueKind.Stack) when Size(l) == Size(r) => Pack(Elements(l).Zip(Elements(r), Plus).ToArray()),
                (ValueKind.Stack, ValueKind.Stack) => throw Error($"add: stacks of {Size(l)} and {Size(r)} entries"),
                _ => throw Error("add: a tensor plus a stack; write the stack on the left to add the tensor to every entry"),
            };
        }

        int Interp(OpKind op, Expr pair, double t, string what)
        {
            if (!double.IsFinite(t)) throw Error($"{what}: t {ExprText.Num(t)} is not finite");
            int p = ExpectStack(pair, what);
            if (Size(p) != 2)
                throw Error($"{what} needs exactly 2 models, got {Size(p)} ({Describe(pair)})");
            return Add(op, ValueKind.Tensor, [p], ExprText.Num(t), n => n with { Scalar = t });
        }

        int CombineNode(Combine c)
        {
            int st = ExpectStack(c.Stack, c.Method.ToString());
            int n = Size(st);
            if (c.Method.Arity is int arity && n != arity)
                throw Error($"{c.Method} needs exactly {arity} models, got {n} ({Describe(c.Stack)})");
            var resolved = c.Method.Resolve(f => Factor(f, $"{c.Method}: parameter"));
            switch (resolved)
            {
                case MultiSlerp { NormalizeWeights: true } ms when ms.Weights.Count > 0 && ms.Weights.Sum(Combiner.Value) == 0:
                    throw Error($"{c.Method}: the weights sum to 0");
                case Sce sce when !(Combiner.Value(sce.SelectTopK) is >= 0 and <= 1):
                    throw Error($"{c.Method}: select_topk {ExprText.Num(Combiner.Value(sce.SelectTopK))} is outside [0, 1]");
                case NearSwap ns when !(Combiner.Value(ns.T) >= 0):
                    throw Error($"{c.Method}: t {ExprText.Num(Combiner.Value(ns.T))} must be ≥ 0");
                case Karcher k when k.MaxIterations < 1 || !(k.Tolerance > 0):
                    throw Error($"{c.Method}: needs max_iter ≥ 1 and tol > 0");
            }
            return Add(OpKind.Combine, ValueKind.Tensor, [st], resolved.ToString(), node => node with { Combiner = resolved });
        }

        int RescaleL1Node(RescaleL1 r)
        {
            if (r.Value.Kind != r.Reference.Kind) throw Error($"rescaleL1: the value and its reference must both be tensors or both stacks: {r}");
            int v = Lower(r.Value), reference = Lower(r.Reference);
            int One(int x, int y) => Add(OpKind.RescaleL1, ValueKind.Tensor, [x, y], "");
            if (r.Value.Kind == ValueKind.Tensor) return One(v, reference);
            if (Size(v) != Size(reference)) throw Error($"rescaleL1: stacks of {Size(v)} and {Size(reference)} entries");
            return Pack(Elements(v).Zip(Elements(reference), One).ToArray());
        }

        string Describe(Expr pair) => pair switch
        {
            Experts => $"{ctx.ExpertCount} experts",
            StackOf { Items: [BaseModel, Experts] } => $"base + {ctx.ExpertCount} experts",
            _ => pair.ToString(),
        };

        int ModelStockNode(ModelStock m)
        {
            int st = ExpectStack(m.Experts, "modelStock");
            if (Size(st) < 2) throw Error($"modelStock needs at least 2 experts, got {Size(st)}");
            int b = ExpectTensor(m.Base, "modelStock (base)");
            return Add(OpKind.ModelStock, ValueKind.Tensor, [st, b], "");
        }

        /// <summary>The output expression: a passthrough at the top (under layer shifts only) copies the stored tensor.</summary>
        public int Top(Expr e) => e switch
        {
            Passthrough p => PassthroughNode(p),
            ShiftLayers s => Shifted(s, () => Top(s.Value)),
            _ => Lower(e),
        };

        /// <summary>A top-level passthrough copies the stored tensor; anything else is just its source.</summary>
        int PassthroughNode(Passthrough p) => p.Source switch
        {
            BaseModel => Load(BaseIndex(), raw: true),
            ModelTensor m => Load(ModelIndex(m.Model), raw: true),
            Pick { Stack: Experts } pk when pk.Index >= 0 && pk.Index < ctx.ExpertCount => Load((ctx.HasBase ? 1 : 0) + pk.Index, raw: true),
            ShiftLayers s => Shifted(s, () => PassthroughNode(new Passthrough(s.Value))),
            _ => ExpectTensor(p.Source, "passthrough"),
        };
    }
}
