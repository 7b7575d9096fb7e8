namespace MergeDsl.Core.Checkpoints;

/// <summary>PyTorch pickle checkpoints to safetensors, through the atomic writer.</summary>
public static class TorchConversion
{
    /// <summary>
    /// Writes every tensor of <paramref name="source"/> (in file order, each as a contiguous copy; tensors that shared
    /// a storage become separate tensors) to <paramref name="target"/>, sharded by <c>MaxShardBytes</c>, with the
    /// source folder's config and tokenizer files copied through unless <c>CopyFilesFrom</c> says otherwise.
    /// Nothing appears at the target unless every tensor was written.
    /// </summary>
    public static void ToSafetensors(TorchCheckpoint source, string target, CheckpointWriterOptions options, Action<int, int>? progress = null)
    {
        var layout = source.Tensors.Select(t => (t.Name, t.DType, t.Shape)).ToList();
        using var writer = CheckpointWriter.Create(target, layout, options with { CopyFilesFrom = options.CopyFilesFrom ?? source.Folder });
        int done = 0;
        foreach (var t in source.Tensors)
        {
            using (var x = source.Load(t.Name)) writer.Write(t.Name, x);
            progress?.Invoke(++done, layout.Count);
        }
        writer.Commit();
    }
}
