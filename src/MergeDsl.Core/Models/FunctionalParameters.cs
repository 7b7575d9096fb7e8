using static TorchSharp.torch;
using TorchSharp.Modules;

namespace MergeDsl.Core.Models;

/// <summary>
/// Lets a forward pass use tensors other than a module's own parameters, looked up by full
/// parameter name. AdaMerging needs this: its merged weights θ₀ + Σ λᵢτᵢ are functions of the
/// trainable λ, so they cannot be stored in leaf parameters without cutting the gradient.
/// </summary>
public static class FunctionalParameters
{
    [ThreadStatic] static IReadOnlyDictionary<string, Tensor>? current;

    /// <summary>Within the returned scope (on this thread), leaf modules read overridden parameters from <paramref name="overrides"/>.</summary>
    public static IDisposable Use(IReadOnlyDictionary<string, Tensor> overrides)
    {
        var previous = current;
        current = overrides;
        return new Restore(previous);
    }

    /// <summary>The override for <paramref name="fullName"/> if one is active, else the parameter itself.</summary>
    public static Tensor Resolve(string fullName, Parameter own)
        => current is { } c && c.TryGetValue(fullName, out var t) ? t : own;

    sealed class Restore(IReadOnlyDictionary<string, Tensor>? previous) : IDisposable
    {
        public void Dispose() => current = previous;
    }
}
