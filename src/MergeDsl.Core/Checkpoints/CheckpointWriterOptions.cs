namespace MergeDsl.Core.Checkpoints;

/// <summary>How <see cref="CheckpointWriter"/> lays out and places its output.</summary>
public sealed record CheckpointWriterOptions
{
    /// <summary>Largest shard in bytes (Hugging Face's default 5 GB); parse user text with <see cref="ByteSize.Parse"/>.
    /// A tensor larger than this gets a shard of its own.</summary>
    public long MaxShardBytes { get; init; } = 5_000_000_000;

    /// <summary>Written into every shard's <c>__metadata__</c>. "format": "pt" is added when absent, since
    /// transformers refuses safetensors metadata without it.</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; init; } = new Dictionary<string, string>();

    /// <summary>A Hugging Face folder whose config.json, tokenizer and other small files are copied to the output.</summary>
    public string? CopyFilesFrom { get; init; }

    /// <summary>Replace an existing target; otherwise an existing target is an error.</summary>
    public bool Overwrite { get; init; }
}
