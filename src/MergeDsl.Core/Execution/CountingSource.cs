using System.Collections.Concurrent;
using MergeDsl.Core.Checkpoints;
using TorchSharp;

namespace MergeDsl.Core.Execution;

/// <summary>Wraps a source and counts loads per tensor name (to prove each input is read once).</summary>
public sealed class CountingSource(ITensorSource inner) : ITensorSource
{
    readonly ConcurrentDictionary<string, int> loads = new(StringComparer.Ordinal);

    /// <summary>Loads per name so far.</summary>
    public IReadOnlyDictionary<string, int> Loads => loads;

    /// <summary>Total loads.</summary>
    public int TotalLoads => loads.Values.Sum();

    /// <inheritdoc />
    public string Label => inner.Label;
    /// <inheritdoc />
    public IReadOnlyList<TensorInfo> Tensors => inner.Tensors;
    /// <inheritdoc />
    public IReadOnlyDictionary<string, string> Metadata => inner.Metadata;
    /// <inheritdoc />
    public bool TryGetInfo(string name, out TensorInfo info) => inner.TryGetInfo(name, out info);

    /// <inheritdoc />
    public torch.Tensor Load(string name)
    {
        loads.AddOrUpdate(name, 1, (_, c) => c + 1);
        return inner.Load(name);
    }

    /// <summary>Disposes the wrapped source.</summary>
    public void Dispose() => inner.Dispose();
}
