using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using MergeDsl.Core.Torch;

namespace MergeDsl.Core.Models;

/// <summary>
/// Base of every module that owns parameters: knows its full Hugging Face name (e.g.
/// <c>vision_model.encoder.layers.0.mlp.fc1</c>) so a functional override can replace its tensors.
/// </summary>
public abstract class NamedModule : nn.Module<Tensor, Tensor>
{
    /// <summary>Creates a module whose parameters are named <c>fullName.&lt;local&gt;</c>.</summary>
    protected NamedModule(string fullName) : base(fullName) { FullName = fullName; }

    /// <summary>Dotted path of this module inside the model.</summary>
    public string FullName { get; }

    /// <summary>The tensor to use for a parameter in this forward pass (its own, or a functional override).</summary>
    protected Tensor P(Parameter own, string local)
        => FunctionalParameters.Active ? FunctionalParameters.Resolve(FullName + "." + local, own) : own;

    /// <summary>A new parameter drawn from N(0, std²).</summary>
    protected static Parameter Normal(long[] shape, double std, bool requiresGrad = true)
    {
        using var _ = no_grad();
        return new Parameter(torch.randn(shape).Times(std), requiresGrad);
    }

    /// <summary>A new parameter filled with <paramref name="value"/>.</summary>
    protected static Parameter Filled(long[] shape, double value, bool requiresGrad = true)
        => new(ScalarArgs.Full(shape, value, ScalarType.Float32), requiresGrad);
}

/// <summary><c>nn.Linear</c> with HF names <c>weight</c> [out, in] and <c>bias</c> [out].</summary>
public sealed class ClipLinear : NamedModule
{
    /// <summary>Weight [out, in].</summary>
    public Parameter Weight { get; }
    /// <summary>Bias [out], or null.</summary>
    public Parameter? Bias { get; }

    /// <summary>Creates a linear layer initialised N(0, 0.02²), bias 0.</summary>
    public ClipLinear(string fullName, long inFeatures, long outFeatures, bool bias = true) : base(fullName)
    {
        Weight = Normal([outFeatures, inFeatures], 0.02);
        register_parameter("weight", Weight);
        if (bias)
        {
            Bias = Filled([outFeatures], 0.0);
            register_parameter("bias", Bias);
        }
    }

    /// <inheritdoc/>
    public override Tensor forward(Tensor x)
        => nn.functional.linear(x, P(Weight, "weight"), Bias is null ? null : P(Bias, "bias"));
}

/// <summary><c>nn.LayerNorm</c> over the last dimension with HF names <c>weight</c> and <c>bias</c>.</summary>
public sealed class ClipLayerNorm : NamedModule
{
    readonly long dim;
    readonly double eps;
    /// <summary>Scale [dim].</summary>
    public Parameter Weight { get; }
    /// <summary>Shift [dim].</summary>
    public Parameter Bias { get; }

    /// <summary>Creates a LayerNorm initialised to the identity affine map.</summary>
    public ClipLayerNorm(string fullName, long dim, double eps) : base(fullName)
    {
        this.dim = dim; this.eps = eps;
        Weight = Filled([dim], 1.0); Bias = Filled([dim], 0.0);
        register_parameter("weight", Weight);
        register_parameter("bias", Bias);
    }

    /// <inheritdoc/>
    public override Tensor forward(Tensor x)
        => nn.functional.layer_norm(x, [dim], P(Weight, "weight"), P(Bias, "bias"), eps);
}

/// <summary>A module holding one parameter called <c>weight</c> (HF's patch and position embeddings).</summary>
public sealed class WeightHolder : NamedModule
{
    /// <summary>The tensor.</summary>
    public Parameter Weight { get; }

    /// <summary>Wraps <paramref name="weight"/> under <c>fullName.weight</c>.</summary>
    public WeightHolder(string fullName, Parameter weight) : base(fullName)
    {
        Weight = weight;
        register_parameter("weight", Weight);
    }

    /// <summary>The weight as seen by the current forward pass.</summary>
    public Tensor Value => P(Weight, "weight");

    /// <inheritdoc/>
    public override Tensor forward(Tensor x) => throw new InvalidOperationException($"{FullName} is a parameter holder");
}

/// <summary>Patch embedding (conv, no bias) + class token + learned positions, as HF CLIPVisionEmbeddings.</summary>
public sealed class ClipEmbeddings : NamedModule
{
    readonly ClipVisionConfig cfg;
    readonly WeightHolder patch, position;
    /// <summary>The class token [hidden].</summary>
    public Parameter ClassEmbedding { get; }

    /// <summary>Creates the embeddings with CLIP-like random initialisation.</summary>
    public ClipEmbeddings(string fullName, ClipVisionConfig cfg) : base(fullName)
    {
        this.cfg = cfg;
        int d = cfg.HiddenSize;
        ClassEmbedding = Normal([d], Math.Pow(d, -0.5));
        register_parameter("class_embedding", ClassEmbedding);
        patch = new WeightHolder(fullName + ".patch_embedding", Normal([d, cfg.NumChannels, cfg.PatchSize, cfg.PatchSize], 0.02));
        position = new WeightHolder(fullName + ".position_embedding", Normal([cfg.NumPositions, d], 0.02));
        register_module("patch_embedding", patch);
        register_module("position_embedding", position);
    }

    /// <inheritdoc/>
    public override Tensor forward(Tensor pixels)
    {
        if (pixels.dim() != 4 || pixels.shape[1] != cfg.NumChannels || pixels.shape[2] != cfg.ImageSize || pixels.shape[3] != cfg.ImageSize)
            throw new ArgumentException(
                $"CLIP vision model: expected pixel_values [batch, {cfg.NumChannels}, {cfg.ImageSize}, {cfg.ImageSize}], got [{string.Join(", ", pixels.shape)}]");
        long b = pixels.shape[0];
        var patches = nn.functional.conv2d(pixels, patch.Value, null, strides: [cfg.PatchSize, cfg.PatchSize]);
        patches = patches.flatten(2).transpose(1, 2);                       // [B, g*g, D]
        var cls = P(ClassEmbedding, "class_embedding").expand(b, 1, cfg.HiddenSize);
        return torch.cat([cls, patches], 1).Plus(position.Value.unsqueeze(0));
    }
}

/// <summary>Which part of an encoder layer a module is; see <see cref="ModuleSite"/>.</summary>
public enum ModuleRole
{
    /// <summary>The whole MLP (<c>mlp</c>: fc1, activation, fc2).</summary>
    Mlp,
    /// <summary><c>self_attn.q_proj</c>.</summary>
    QProj,
    /// <summary><c>self_attn.k_proj</c>.</summary>
    KProj,
    /// <summary><c>self_attn.v_proj</c>.</summary>
    VProj,
    /// <summary><c>self_attn.out_proj</c>.</summary>
    OutProj,
    /// <summary><c>mlp.fc1</c> (only offered when the MLP itself was not replaced).</summary>
    Fc1,
    /// <summary><c>mlp.fc2</c> (only offered when the MLP itself was not replaced).</summary>
    Fc2,
}

/// <summary>A place in the encoder where a module can be swapped for an MoE module.</summary>
/// <param name="Path">Full module path, e.g. <c>vision_model.encoder.layers.3.mlp</c>.</param>
/// <param name="Layer">Encoder layer index.</param>
/// <param name="Role">Which module of the layer.</param>
/// <param name="InFeatures">Width of the module's input.</param>
/// <param name="OutFeatures">Width of the module's output.</param>
public sealed record ModuleSite(string Path, int Layer, ModuleRole Role, long InFeatures, long OutFeatures);

/// <summary>
/// Chooses the module built at a site: return null for the plain CLIP module. Used by upscaling to
/// put MoE modules in place of MLPs or attention projections; the replacement is registered under
/// the same name, so its parameters are named <c>&lt;site.Path&gt;.&lt;its own names&gt;</c>.
/// </summary>
public delegate nn.Module<Tensor, Tensor>? ModuleFactory(ModuleSite site);

/// <summary>The plain CLIP MLP: fc2(act(fc1(x))).</summary>
public sealed class ClipMlp : nn.Module<Tensor, Tensor>
{
    readonly nn.Module<Tensor, Tensor> fc1, fc2;
    readonly Func<Tensor, Tensor> act;

    /// <summary>Creates the MLP; <paramref name="factory"/> may replace fc1/fc2.</summary>
    public ClipMlp(string fullName, int layer, ClipVisionConfig cfg, ModuleFactory? factory) : base(fullName)
    {
        act = Activations.Get(cfg.HiddenAct);
        fc1 = factory?.Invoke(new ModuleSite(fullName + ".fc1", layer, ModuleRole.Fc1, cfg.HiddenSize, cfg.IntermediateSize))
              ?? new ClipLinear(fullName + ".fc1", cfg.HiddenSize, cfg.IntermediateSize);
        fc2 = factory?.Invoke(new ModuleSite(fullName + ".fc2", layer, ModuleRole.Fc2, cfg.IntermediateSize, cfg.HiddenSize))
              ?? new ClipLinear(fullName + ".fc2", cfg.IntermediateSize, cfg.HiddenSize);
        register_module("fc1", fc1);
        register_module("fc2", fc2);
    }

    /// <inheritdoc/>
    public override Tensor forward(Tensor x) => fc2.forward(act(fc1.forward(x)));
}

/// <summary>HF CLIPAttention: scaled dot-product multi-head self-attention, no mask.</summary>
public sealed class ClipAttention : nn.Module<Tensor, Tensor>
{
    readonly nn.Module<Tensor, Tensor> q, k, v, o;
    readonly int heads, headDim;
    readonly double scale;

    /// <summary>Creates the attention block; <paramref name="factory"/> may replace any projection.</summary>
    public ClipAttention(string fullName, int layer, ClipVisionConfig cfg, ModuleFactory? factory) : base(fullName)
    {
        heads = cfg.NumAttentionHeads; headDim = cfg.HeadDim; scale = Math.Pow(headDim, -0.5);
        nn.Module<Tensor, Tensor> Make(string local, ModuleRole role)
            => factory?.Invoke(new ModuleSite($"{fullName}.{local}", layer, role, cfg.HiddenSize, cfg.HiddenSize))
               ?? new ClipLinear($"{fullName}.{local}", cfg.HiddenSize, cfg.HiddenSize);
        q = Make("q_proj", ModuleRole.QProj); k = Make("k_proj", ModuleRole.KProj);
        v = Make("v_proj", ModuleRole.VProj); o = Make("out_proj", ModuleRole.OutProj);
        register_module("k_proj", k);
        register_module("v_proj", v);
        register_module("q_proj", q);
        register_module("out_proj", o);
    }

    /// <inheritdoc/>
    public override Tensor forward(Tensor x)
    {
        long b = x.shape[0], t = x.shape[1];
        Tensor Split(Tensor y) => y.view(b, t, heads, headDim).transpose(1, 2);   // [B, H, T, hd]
        var qh = Split(q.forward(x).Times(scale));
        var kh = Split(k.forward(x));
        var vh = Split(v.forward(x));
        var attn = torch.softmax(torch.matmul(qh, kh.transpose(-1, -2)), -1);
        var ctx = torch.matmul(attn, vh).transpose(1, 2).reshape(b, t, heads * headDim);
        return o.forward(ctx);
    }
}

/// <summary>Pre-norm transformer block: x + attn(ln1(x)), then + mlp(ln2(x)).</summary>
public sealed class ClipEncoderLayer : nn.Module<Tensor, Tensor>
{
    readonly ClipAttention attn;
    readonly ClipLayerNorm ln1, ln2;

    /// <summary>The MLP module (plain <see cref="ClipMlp"/> or an MoE module).</summary>
    public nn.Module<Tensor, Tensor> Mlp { get; }

    /// <summary>Creates layer <paramref name="index"/> under <paramref name="fullName"/>.</summary>
    public ClipEncoderLayer(string fullName, int index, ClipVisionConfig cfg, ModuleFactory? factory) : base(fullName)
    {
        attn = new ClipAttention(fullName + ".self_attn", index, cfg, factory);
        ln1 = new ClipLayerNorm(fullName + ".layer_norm1", cfg.HiddenSize, cfg.LayerNormEps);
        Mlp = factory?.Invoke(new ModuleSite(fullName + ".mlp", index, ModuleRole.Mlp, cfg.HiddenSize, cfg.HiddenSize))
              ?? new ClipMlp(fullName + ".mlp", index, cfg, factory);
        ln2 = new ClipLayerNorm(fullName + ".layer_norm2", cfg.HiddenSize, cfg.LayerNormEps);
        register_module("self_attn", attn);
        register_module("layer_norm1", ln1);
        register_module("mlp", Mlp);
        register_module("layer_norm2", ln2);
    }

    /// <inheritdoc/>
    public override Tensor forward(Tensor x)
    {
        var h = x.Plus(attn.forward(ln1.forward(x)));
        return h.Plus(Mlp.forward(ln2.forward(h)));
    }
}
