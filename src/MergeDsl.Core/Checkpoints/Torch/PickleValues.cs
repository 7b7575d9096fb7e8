namespace MergeDsl.Core.Checkpoints.Torch;

/// <summary>A global (<c>module.name</c>) the restricted unpickler allows; it is a marker, never a callable.</summary>
internal sealed record PickleGlobal(string Module, string Name)
{
    public override string ToString() => $"{Module}.{Name}";
}

/// <summary>A Python tuple.</summary>
internal sealed record PickleTuple(object?[] Items);

/// <summary>A Python dict or OrderedDict, in insertion order (keys compared by value).</summary>
internal sealed class PickleDict
{
    public List<KeyValuePair<object?, object?>> Items { get; } = new();
}

/// <summary>A storage a tensor views: where its bytes are (the reader's key), its dtype and element count.</summary>
/// <param name="Key">The archive's storage key (zip: <c>data/&lt;key&gt;</c>; legacy: the key in the trailing storage list).</param>
/// <param name="DType">From the storage type (<c>torch.FloatStorage</c> → F32, ...).</param>
/// <param name="Numel">Elements in the storage.</param>
/// <param name="ElementOffset">Where the storage starts inside its root storage (legacy views), in elements.</param>
internal sealed record TorchStorage(string Key, DType DType, long Numel, long ElementOffset);

/// <summary>A tensor as <c>torch._utils._rebuild_tensor_v2</c> describes it: a strided view of a storage.</summary>
internal sealed record TorchTensorRef(TorchStorage Storage, long Offset, long[] Size, long[] Stride);
