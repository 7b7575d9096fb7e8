using TorchSharp;
using static TorchSharp.torch;
using MergeDsl.Core.Torch;

namespace MergeDsl.Core.Models;

/// <summary>
/// How stored images become model input. u8 images are scaled to [0, 1] and then normalised per
/// channel with <see cref="Mean"/>/<see cref="Std"/>; f32 images are taken as ready pixel values.
/// </summary>
/// <param name="Mean">Per-channel mean (CLIP: 0.4815, 0.4578, 0.4082).</param>
/// <param name="Std">Per-channel std (CLIP: 0.2686, 0.2613, 0.2758).</param>
public sealed record ImagePreprocess(float[] Mean, float[] Std)
{
    /// <summary>OpenAI CLIP's normalisation.</summary>
    public static ImagePreprocess Clip { get; } = new([0.48145466f, 0.4578275f, 0.40821073f], [0.26862954f, 0.26130258f, 0.27577711f]);

    /// <summary>Maps [0,1] to [-1,1] on every channel.</summary>
    public static ImagePreprocess Symmetric(int channels) => new(Enumerable.Repeat(0.5f, channels).ToArray(), Enumerable.Repeat(0.5f, channels).ToArray());

    /// <summary>Converts a batch [B, C, H, W] to float pixel values on <paramref name="device"/>.</summary>
    public Tensor Apply(Tensor images, Device device)
    {
        if (images.dtype == ScalarType.Float32) return images.to(device);
        if (images.dtype != ScalarType.Byte)
            throw new ArgumentException($"images: dtype {images.dtype} is not supported (expected F32 or U8)");
        long c = images.shape[1];
        if (Mean.Length != c || Std.Length != c)
            throw new ArgumentException($"images: {c} channels but the preprocessing has {Mean.Length} means and {Std.Length} stds");
        var x = images.to(device).to(ScalarType.Float32).Over(255.0);
        var mean = torch.tensor(Mean, device: device).view(1, c, 1, 1);
        var std = torch.tensor(Std, device: device).view(1, c, 1, 1);
        return (x - mean) / std;
    }
}

/// <summary>
/// Batched inference without gradients: each batch runs inside its own dispose scope, so memory stays
/// flat however many batches go through.
/// </summary>
public static class ClipInference
{
    /// <summary>
    /// Runs <paramref name="model"/> over <paramref name="images"/> [N, C, H, W] in batches on
    /// <paramref name="device"/> and hands each batch's image embeddings (on the device, valid only
    /// during the callback) with the batch's start index to <paramref name="onBatch"/>.
    /// </summary>
    public static void ForEachBatch(nn.Module<Tensor, Tensor> model, Tensor images, int batchSize, Device device,
        ImagePreprocess? preprocess, Action<long, Tensor> onBatch)
    {
        if (batchSize <= 0) throw new ArgumentException($"batch size must be positive, got {batchSize}");
        bool wasTraining = model.training;
        model.eval();
        try
        {
            using var _ = no_grad();
            long n = images.shape[0];
            for (long start = 0; start < n; start += batchSize)
            {
                using var scope = NewDisposeScope();
                long len = Math.Min(batchSize, n - start);
                var batch = images.narrow(0, start, len);
                var x = (preprocess ?? ImagePreprocess.Symmetric((int)images.shape[1])).Apply(batch, device);
                onBatch(start, model.forward(x));
            }
        }
        finally { model.train(wasTraining); }
    }

    /// <summary>Image embeddings [N, projection_dim] on the CPU.</summary>
    public static Tensor Embed(nn.Module<Tensor, Tensor> model, Tensor images, int batchSize, Device device, ImagePreprocess? preprocess = null)
    {
        var parts = new List<Tensor>();
        ForEachBatch(model, images, batchSize, device, preprocess, (_, e) => parts.Add(e.cpu().MoveToOuterDisposeScope()));
        var all = torch.cat(parts, 0);
        foreach (var p in parts) p.Dispose();
        return all;
    }

    /// <summary>Logits [N, classes] on the CPU for one task's head.</summary>
    public static Tensor Logits(nn.Module<Tensor, Tensor> model, ClassificationHead head, Tensor images, int batchSize, Device device, ImagePreprocess? preprocess = null)
    {
        head.to(device);
        var parts = new List<Tensor>();
        ForEachBatch(model, images, batchSize, device, preprocess, (_, e) => parts.Add(head.forward(e).cpu().MoveToOuterDisposeScope()));
        var all = torch.cat(parts, 0);
        foreach (var p in parts) p.Dispose();
        return all;
    }
}
