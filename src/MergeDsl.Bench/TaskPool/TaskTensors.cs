using MergeDsl.Bench.Data;
using MergeDsl.Core.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace MergeDsl.Bench.TaskPool;

/// <summary>One task's data as tensors (U8 images [N, 1, H, W], I64 labels), batched into floats on demand.</summary>
public sealed class TaskTensors : IDisposable
{
    /// <summary>The task.</summary>
    public TaskSpec Task { get; }
    /// <summary>Training images, U8 [N, 1, H, W].</summary>
    public Tensor TrainImages { get; }
    /// <summary>Training labels, I64 [N].</summary>
    public Tensor TrainLabels { get; }
    /// <summary>Validation images, U8 [N, 1, H, W] (empty for the pretraining sets): for hyper-parameter choices only.</summary>
    public Tensor ValidationImages { get; }
    /// <summary>Validation labels, I64 [N].</summary>
    public Tensor ValidationLabels { get; }
    /// <summary>Test images, U8 [N, 1, H, W].</summary>
    public Tensor TestImages { get; }
    /// <summary>Test labels, I64 [N].</summary>
    public Tensor TestLabels { get; }

    /// <summary>Wraps a task's data, keeping at most <paramref name="maxTrain"/> / <paramref name="maxTest"/> images.</summary>
    public TaskTensors(TaskSpec task, SplitDataset data, int maxTrain = int.MaxValue, int maxTest = int.MaxValue)
        : this(task, data.Train.Take(maxTrain), data.Train.Take(0), data.Test.Take(maxTest)) { }

    /// <summary>Wraps a task's three splits (see <see cref="TaskSplits.Split"/>).</summary>
    public TaskTensors(TaskSpec task, ImageSet train, ImageSet validation, ImageSet test)
    {
        Task = task;
        TrainImages = ToTensor(train);
        TrainLabels = tensor(train.Labels, new long[] { train.Count });
        ValidationImages = ToTensor(validation);
        ValidationLabels = tensor(validation.Labels, new long[] { validation.Count });
        TestImages = ToTensor(test);
        TestLabels = tensor(test.Labels, new long[] { test.Count });
    }

    static Tensor ToTensor(ImageSet s) => tensor(s.Pixels, new long[] { s.Count, 1, s.Height, s.Width }, ScalarType.Byte);

    /// <summary>U8 images to model input: x / 255 mapped to [-1, 1] (mean 0.5, std 0.5, as in config.json).</summary>
    public static Tensor ToInput(Tensor u8) => ImagePreprocess.Symmetric((int)u8.shape[1]).Apply(u8, CPU);

    /// <summary>A random training batch (indices from <paramref name="rng"/>).</summary>
    public (Tensor Images, Tensor Labels) TrainBatch(Random rng, int size) => Batch(TrainImages, TrainLabels, rng, size);

    /// <summary>A random test batch (for label-free test-time adaptation only the images are used).</summary>
    public Tensor TestBatch(Random rng, int size) => Batch(TestImages, TestLabels, rng, size).Item1;

    static (Tensor, Tensor) Batch(Tensor images, Tensor labels, Random rng, int size)
    {
        long n = images.shape[0];
        var idx = new long[size];
        for (int i = 0; i < size; i++) idx[i] = rng.NextInt64(n);
        var it = tensor(idx);
        return (ToInput(images.index_select(0, it)), labels.index_select(0, it));
    }

    /// <inheritdoc />
    public void Dispose()
    {
        TrainImages.Dispose(); TrainLabels.Dispose(); ValidationImages.Dispose(); ValidationLabels.Dispose();
        TestImages.Dispose(); TestLabels.Dispose();
    }
}
