using TorchSharp;

namespace MergeDsl.Core.Checkpoints;

/// <summary>Anything tensors can be read from by name: a checkpoint, or an in-memory dictionary in tests.</summary>
public interface ITensorSource : IDisposable
{
    /// <summary>Path or name, used in error messages.</summary>
    string Label { get; }

    /// <summary>Every tensor, in file order (shard by shard) or sorted by name.</summary>
    IReadOnlyList<TensorInfo> Tensors { get; }

    /// <summary>Looks a tensor up by name.</summary>
    bool TryGetInfo(string name, out TensorInfo info);

    /// <summary>
    /// Loads a tensor on the CPU. The caller owns and disposes it, and must never modify it in place
    /// (it may view the source's memory).
    /// </summary>
    torch.Tensor Load(string name);

    /// <summary>Free-form string metadata (safetensors <c>__metadata__</c>, merged over shards).</summary>
    IReadOnlyDictionary<string, string> Metadata { get; }
}
