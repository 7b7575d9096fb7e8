using static TorchSharp.torch;

namespace MergeDsl.Core.Models.Decoder;

/// <summary>
/// Keys and values of every layer for the tokens seen so far, in buffers allocated once for
/// <see cref="Capacity"/> positions ([B, kv_heads, capacity, head_dim] per layer), so appending a token
/// writes one slice instead of copying the whole cache: a new token costs one model pass over one position.
/// </summary>
public sealed class KvCache : IDisposable
{
    readonly Tensor[] keys, values;

    /// <summary>Allocates an empty cache for <paramref name="batch"/> sequences of up to <paramref name="capacity"/> tokens.</summary>
    public KvCache(DecoderConfig cfg, long batch, long capacity, ScalarType dtype = ScalarType.Float32, Device? device = null)
    {
        if (capacity <= 0) throw new ArgumentException($"KV cache capacity must be positive, got {capacity}");
        Capacity = capacity;
        Batch = batch;
        keys = new Tensor[cfg.NumHiddenLayers];
        values = new Tensor[cfg.NumHiddenLayers];
        for (int i = 0; i < keys.Length; i++)
        {
            keys[i] = zeros([batch, cfg.NumKeyValueHeads, capacity, cfg.HeadDim], dtype, device);
            values[i] = zeros([batch, cfg.NumKeyValueHeads, capacity, cfg.HeadDim], dtype, device);
        }
    }

    /// <summary>Positions the buffers hold.</summary>
    public long Capacity { get; }

    /// <summary>Sequences in the batch.</summary>
    public long Batch { get; }

    /// <summary>Tokens cached so far (the position of the next token).</summary>
    public long Length { get; private set; }

    /// <summary>
    /// Writes layer <paramref name="layer"/>'s keys and values for the new tokens (positions
    /// <see cref="Length"/> onwards) and returns views of every cached position including them.
    /// <see cref="Advance"/> moves <see cref="Length"/> once all layers have written.
    /// </summary>
    public (Tensor Keys, Tensor Values) Append(int layer, Tensor k, Tensor v)
    {
        long t = k.shape[2];
        if (Length + t > Capacity)
            throw new InvalidOperationException($"KV cache holds {Capacity} positions; {Length} are used and {t} more were given");
        using (no_grad())
        {
            keys[layer].narrow(2, Length, t).copy_(k);
            values[layer].narrow(2, Length, t).copy_(v);
        }
        return (keys[layer].narrow(2, 0, Length + t), values[layer].narrow(2, 0, Length + t));
    }

    /// <summary>Marks <paramref name="tokens"/> more positions as cached.</summary>
    public void Advance(long tokens) => Length += tokens;

    /// <inheritdoc/>
    public void Dispose()
    {
        foreach (var t in keys) t.Dispose();
        foreach (var t in values) t.Dispose();
    }
}
