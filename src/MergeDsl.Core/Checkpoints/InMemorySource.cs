using TorchSharp;

namespace MergeDsl.Core.Checkpoints;

/// <summary>
/// Tensors held in memory, served by name. The source does not own the tensors: whoever built the
/// dictionary disposes them. <see cref="Load"/> returns a new handle (an alias) the caller disposes.
/// </summary>
public sealed class InMemorySource : ITensorSource
{
    readonly IReadOnlyDictionary<string, torch.Tensor> _tensors;
    readonly Dictionary<string, TensorInfo> _infos;

    /// <summary>Wraps <paramref name="tensors"/>; names are listed sorted (ordinal).</summary>
    public InMemorySource(string label, IReadOnlyDictionary<string, torch.Tensor> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        Label = label;
        _tensors = tensors;
        Metadata = metadata ?? new Dictionary<string, string>();
        _infos = new Dictionary<string, TensorInfo>(StringComparer.Ordinal);
        foreach (var (name, t) in tensors)
        {
            var d = DTypes.FromTorch(t.dtype);
            _infos[name] = new TensorInfo(name, d, t.shape.ToArray(), label, 0, t.numel() * DTypes.SizeOf(d));
        }
        Tensors = _infos.Values.OrderBy(i => i.Name, StringComparer.Ordinal).ToList();
    }

    /// <inheritdoc/>
    public string Label { get; }

    /// <inheritdoc/>
    public IReadOnlyList<TensorInfo> Tensors { get; }

    /// <inheritdoc/>
    public IReadOnlyDictionary<string, string> Metadata { get; }

    /// <inheritdoc/>
    public bool TryGetInfo(string name, out TensorInfo info) => _infos.TryGetValue(name, out info!);

    /// <inheritdoc/>
    public torch.Tensor Load(string name) =>
        _tensors.TryGetValue(name, out var t)
            ? t.alias()
            : throw new KeyNotFoundException($"{Label}: no tensor named '{name}'");

    /// <summary>Nothing to release: the tensors belong to the caller.</summary>
    public void Dispose() { }
}
