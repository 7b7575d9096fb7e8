using MergeDsl.Core.Checkpoints;
using TorchSharp;

namespace MergeDsl.Core.Models.Decoder.Tokenizers;

/// <summary>
/// One input model seen through an output vocabulary: its token-embedding matrices (<c>*embed_tokens.weight</c>,
/// <c>lm_head.weight</c>: 2-D, one row per token) have <see cref="VocabularyUnion.Size"/> rows realigned by
/// <see cref="VocabularyUnion.Align"/>; every other tensor is the model's own. The merge then compiles and runs
/// unchanged on these sources, so every method merges the rows of the same token.
/// </summary>
public sealed class AlignedEmbeddingSource : ITensorSource
{
    readonly IReadOnlyList<ITensorSource> _all;
    readonly int _index;
    readonly VocabularyUnion _union;
    readonly Dictionary<string, TensorInfo> _infos;

    /// <summary>Whether a tensor is a per-token matrix that follows the vocabulary.</summary>
    public static bool IsTokenMatrix(TensorInfo t) =>
        t.Shape.Length == 2 && (t.Name.EndsWith("embed_tokens.weight", StringComparison.Ordinal) || t.Name == "lm_head.weight");

    /// <summary>Model <paramref name="index"/> of <paramref name="all"/> (the models <paramref name="union"/> was built for, in its order).</summary>
    public AlignedEmbeddingSource(IReadOnlyList<ITensorSource> all, int index, VocabularyUnion union)
    {
        _all = all;
        _index = index;
        _union = union;
        var inner = all[index];
        _infos = new Dictionary<string, TensorInfo>(StringComparer.Ordinal);
        var list = new List<TensorInfo>();
        foreach (var t in inner.Tensors)
        {
            var info = IsTokenMatrix(t)
                ? t with { Shape = [union.Size, t.Shape[1]], ByteLength = union.Size * t.Shape[1] * DTypes.SizeOf(t.DType) }
                : t;
            _infos[t.Name] = info;
            list.Add(info);
        }
        Tensors = list;
    }

    /// <summary>The wrapped model.</summary>
    public ITensorSource Inner => _all[_index];

    /// <inheritdoc/>
    public string Label => Inner.Label;

    /// <inheritdoc/>
    public IReadOnlyList<TensorInfo> Tensors { get; }

    /// <inheritdoc/>
    public IReadOnlyDictionary<string, string> Metadata => Inner.Metadata;

    /// <inheritdoc/>
    public bool TryGetInfo(string name, out TensorInfo info) => _infos.TryGetValue(name, out info!);

    /// <inheritdoc/>
    public torch.Tensor Load(string name)
    {
        if (!_infos.TryGetValue(name, out var info) || !IsTokenMatrix(info)) return Inner.Load(name);
        // Rows a model lacks come from the others' matrices of the same parameter.
        var matrices = _all.Select(s => s.TryGetInfo(name, out var i) && i.Shape.Length == 2 ? s.Load(name) : null).ToList();
        try
        {
            return _union.Align(_index, matrices);
        }
        finally
        {
            foreach (var m in matrices) m?.Dispose();
        }
    }

    /// <summary>The wrapper does not own the models: the caller disposes them.</summary>
    public void Dispose() { }
}
