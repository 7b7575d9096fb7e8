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

    /// <summary>Replace an existing target that is empty or a mergedsl output; otherwise an existing target is an error.
    /// Ignored when <see cref="Output"/> is given (its reservation decided).</summary>
    public bool Overwrite { get; init; }

    /// <summary>The reserved (locked, checked) output; null: the writer reserves its target itself and releases it
    /// when disposed. Give one when the caller must hold the lock from before its work starts.</summary>
    public OutputFolder? Output { get; init; }

    /// <summary>File names of <see cref="CopyFilesFrom"/> that are not copied (e.g. a SentencePiece <c>tokenizer.model</c> that no
    /// longer matches a changed vocabulary).</summary>
    public IReadOnlySet<string> SkipCopiedFiles { get; init; } = new HashSet<string>();

    /// <summary>Files copied from another model folder (folder, file name), checked like copied-through files and
    /// written over a copied-through file of the same name (e.g. the binary tokenizer of the model whose tokenizer the
    /// output takes).</summary>
    public IReadOnlyList<(string Folder, string Name)> CopyFilesAlso { get; init; } = [];

    /// <summary>Small text files (name → content) written into the folder at commit, so they appear with the weights.</summary>
    public IReadOnlyDictionary<string, string> ExtraFiles { get; init; } = new Dictionary<string, string>();

    /// <summary>The file name when the output is one shard (PEFT adapters are <c>adapter_model.safetensors</c>).</summary>
    public string SingleFileName { get; init; } = Checkpoint.SingleFileName;

    /// <summary>Only these shards (indexes into the whole output's layout) are created and must be written: one part of a
    /// partitioned merge. Null: every shard. With a subset, <see cref="CheckpointWriter.Commit"/> writes no index and
    /// copies nothing through (the finalize step does that for the whole output).</summary>
    public IReadOnlySet<int>? OnlyShards { get; init; }

    /// <summary>The identity of this run (same recipe, inputs, options and layout: same bytes). When set, every shard is
    /// hashed once complete and recorded in the temporary folder's <see cref="ShardJournal"/>, so a killed run can be
    /// resumed.</summary>
    public string? RunIdentity { get; init; }

    /// <summary>Continue the temporary folder of a dead run with the same <see cref="RunIdentity"/> (when there is one):
    /// its journaled shards whose bytes still hash to the journaled value are kept, everything else is redone.</summary>
    public bool Resume { get; init; }

    /// <summary>Called from the writing thread after a shard is complete and flushed (and, with a
    /// <see cref="RunIdentity"/>, hashed and journaled; the hash is empty otherwise).</summary>
    public Action<ShardRecord>? ShardCompleted { get; init; }
}
