using TorchSharp;

namespace MergeDsl.Core.Execution;

/// <summary>Keeps the tensors in memory (CPU copies), for tests and notebooks.</summary>
public sealed class MemorySink : ITensorSink, IDisposable
{
    readonly Dictionary<string, torch.Tensor> tensors = new(StringComparer.Ordinal);

    /// <summary>The tensors written, by name.</summary>
    public IReadOnlyDictionary<string, torch.Tensor> Tensors => tensors;

    /// <summary>Names in the order they were written.</summary>
    public List<string> Order { get; } = [];

    /// <inheritdoc />
    public void Write(string name, torch.Tensor tensor)
    {
        lock (tensors)
        {
            tensors[name] = tensor.cpu().clone();
            Order.Add(name);
        }
    }

    /// <summary>Disposes the stored tensors.</summary>
    public void Dispose()
    {
        foreach (var t in tensors.Values) t.Dispose();
        tensors.Clear();
    }
}
