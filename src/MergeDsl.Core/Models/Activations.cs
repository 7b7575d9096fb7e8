using TorchSharp;
using static TorchSharp.torch;
using MergeDsl.Core.Torch;

namespace MergeDsl.Core.Models;

/// <summary>The MLP activations of Hugging Face CLIP (<c>hidden_act</c>).</summary>
public static class Activations
{
    /// <summary><c>quick_gelu</c>: x·σ(1.702x); <c>gelu</c>: exact erf GELU.</summary>
    public static Func<Tensor, Tensor> Get(string name) => name switch
    {
        "quick_gelu" => x => x * torch.sigmoid(x.Times(1.702)),
        "gelu" => x => nn.functional.gelu(x),
        _ => throw new ArgumentException($"CLIP config: hidden_act '{name}' is not supported (expected quick_gelu or gelu)"),
    };
}
