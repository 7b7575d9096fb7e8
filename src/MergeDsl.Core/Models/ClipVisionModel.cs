using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace MergeDsl.Core.Models;

/// <summary>HF CLIPVisionTransformer: embeddings, pre_layrnorm, encoder.layers.N, post_layernorm.</summary>
public sealed class ClipVisionTransformer : nn.Module<Tensor, Tensor>
{
    readonly ClipEmbeddings embeddings;
    readonly ClipLayerNorm preLn, postLn;
    readonly EncoderModule encoder;

    /// <summary>The encoder layers in order.</summary>
    public IReadOnlyList<ClipEncoderLayer> Layers => encoder.Layers;

    /// <summary>Creates the transformer under <paramref name="fullName"/> (normally <c>vision_model</c>).</summary>
    public ClipVisionTransformer(string fullName, ClipVisionConfig cfg, ModuleFactory? factory) : base(fullName)
    {
        embeddings = new ClipEmbeddings(fullName + ".embeddings", cfg);
        preLn = new ClipLayerNorm(fullName + ".pre_layrnorm", cfg.HiddenSize, cfg.LayerNormEps);
        encoder = new EncoderModule(fullName + ".encoder", cfg, factory);
        postLn = new ClipLayerNorm(fullName + ".post_layernorm", cfg.HiddenSize, cfg.LayerNormEps);
        register_module("embeddings", embeddings);
        register_module("pre_layrnorm", preLn);
        register_module("encoder", encoder);
        register_module("post_layernorm", postLn);
    }

    /// <summary>Last hidden state [B, T, hidden] (before post_layernorm).</summary>
    public override Tensor forward(Tensor pixels) => encoder.forward(preLn.forward(embeddings.forward(pixels)));

    /// <summary>post_layernorm of the class token: HF's <c>pooler_output</c> [B, hidden].</summary>
    public Tensor Pool(Tensor lastHidden) => postLn.forward(lastHidden.select(1, 0));

    sealed class EncoderModule : nn.Module<Tensor, Tensor>
    {
        readonly ModuleList<ClipEncoderLayer> layers;
        public IReadOnlyList<ClipEncoderLayer> Layers { get; }

        public EncoderModule(string fullName, ClipVisionConfig cfg, ModuleFactory? factory) : base(fullName)
        {
            var list = Enumerable.Range(0, cfg.NumHiddenLayers)
                .Select(i => new ClipEncoderLayer($"{fullName}.layers.{i}", i, cfg, factory)).ToArray();
            Layers = list;
            layers = new ModuleList<ClipEncoderLayer>(list);
            register_module("layers", layers);
        }

        public override Tensor forward(Tensor x)
        {
            foreach (var layer in Layers) x = layer.forward(x);
            return x;
        }
    }
}

/// <summary>
/// HF <c>CLIPVisionModelWithProjection</c> (and the vision half of <c>CLIPModel</c>): parameter names
/// are exactly Hugging Face's (<c>vision_model.embeddings.class_embedding</c>,
/// <c>vision_model.pre_layrnorm.weight</c>, <c>vision_model.encoder.layers.N.self_attn.q_proj.weight</c>,
/// …, <c>visual_projection.weight</c>), so <c>state_dict()</c> round-trips with real checkpoints.
/// <c>forward</c> returns the image embedding visual_projection(post_layernorm(h_CLS)) [B, projection_dim].
/// Inputs are pixel values already normalised by the caller.
/// </summary>
public sealed class ClipVisionModel : nn.Module<Tensor, Tensor>
{
    readonly ClipLinear projection;

    /// <summary>The configuration it was built from.</summary>
    public ClipVisionConfig Config { get; }

    /// <summary>The transformer (<c>vision_model.*</c>).</summary>
    public ClipVisionTransformer VisionModel { get; }

    /// <summary>
    /// Builds a randomly initialised model. <paramref name="factory"/> may put other modules (MoE) at
    /// MLP / projection sites; <paramref name="extraModules"/> are registered at the root (e.g. a router
    /// shared by all layers, so its parameters appear once in the state dict).
    /// </summary>
    public ClipVisionModel(ClipVisionConfig config, ModuleFactory? factory = null,
        IReadOnlyDictionary<string, nn.Module>? extraModules = null) : base("CLIPVisionModelWithProjection")
    {
        Torch.TorchRuntime.EnsureLoadable();
        Config = config.Validate();
        VisionModel = new ClipVisionTransformer("vision_model", config, factory);
        projection = new ClipLinear("visual_projection", config.HiddenSize, config.ProjectionDim, bias: false);
        register_module("vision_model", VisionModel);
        register_module("visual_projection", projection);
        if (extraModules is not null)
            foreach (var (name, m) in extraModules) register_module(name, m);
    }

    /// <summary>Image embeddings [B, projection_dim] (not normalised).</summary>
    public override Tensor forward(Tensor pixels) => projection.forward(VisionModel.Pool(VisionModel.forward(pixels)));

    /// <summary>Last hidden state [B, T, hidden].</summary>
    public Tensor Hidden(Tensor pixels) => VisionModel.forward(pixels);

    /// <summary>Parameters by full name (the state dict without buffers).</summary>
    public IReadOnlyDictionary<string, Parameter> ParametersByName()
        => named_parameters().ToDictionary(p => p.name, p => p.parameter);

    /// <summary>
    /// Copies weights into this model by name. Every parameter must be found with the same shape
    /// (any floating dtype is converted); otherwise throws <see cref="ModelWeightsException"/> naming the
    /// missing and mis-shaped parameters. Names the model does not have (a full CLIPModel's
    /// <c>text_model.*</c>, <c>logit_scale</c>, old <c>position_ids</c> buffers) are ignored and returned.
    /// </summary>
    /// <param name="names">Every name the source offers.</param>
    /// <param name="shapeOf">Shape of a named tensor, or null if absent.</param>
    /// <param name="load">Loads a named tensor (the caller's tensor is disposed after copying).</param>
    /// <param name="label">Source name for error messages (a path).</param>
    public IReadOnlyList<string> LoadWeights(IEnumerable<string> names, Func<string, long[]?> shapeOf, Func<string, Tensor> load, string label)
        => NamedWeights.CopyInto(ParametersByName(), names, shapeOf, load, label);

    /// <summary><see cref="LoadWeights(IEnumerable{string}, Func{string, long[]}, Func{string, Tensor}, string)"/> from an in-memory dictionary (not disposed).</summary>
    public IReadOnlyList<string> LoadWeights(IReadOnlyDictionary<string, Tensor> tensors, string label = "weights")
        => LoadWeights(tensors.Keys, n => tensors.TryGetValue(n, out var t) ? t.shape : null, n => tensors[n].alias(), label);

    /// <summary>Detached CPU copies of every parameter, by name (for saving or merging).</summary>
    public Dictionary<string, Tensor> StateTensors()
    {
        using var _ = no_grad();
        return named_parameters().ToDictionary(p => p.name, p => p.parameter.detach().cpu().clone());
    }
}

/// <summary>Weights that do not fit a model: lists the missing and mis-shaped parameters.</summary>
public sealed class ModelWeightsException(string source, IReadOnlyList<string> missing, IReadOnlyList<string> misShaped)
    : Exception(Describe(source, missing, misShaped))
{
    /// <summary>Parameters the model needs that the source lacks.</summary>
    public IReadOnlyList<string> Missing { get; } = missing;
    /// <summary>Parameters present with the wrong shape (with both shapes).</summary>
    public IReadOnlyList<string> MisShaped { get; } = misShaped;

    static string Describe(string source, IReadOnlyList<string> missing, IReadOnlyList<string> misShaped)
    {
        static string List(IReadOnlyList<string> xs) => string.Join(", ", xs.Take(8)) + (xs.Count > 8 ? $", … ({xs.Count} in all)" : "");
        var parts = new List<string>();
        if (missing.Count > 0) parts.Add($"missing {missing.Count} parameter(s): {List(missing)}");
        if (misShaped.Count > 0) parts.Add($"mis-shaped: {List(misShaped)}");
        return $"{source}: weights do not fit the model: {string.Join("; ", parts)}";
    }
}
