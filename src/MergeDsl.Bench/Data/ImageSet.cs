namespace MergeDsl.Bench.Data;

/// <summary>
/// A set of single-channel 8-bit images with integer labels, stored row-major as [N, H, W] bytes.
/// Immutable by convention: derivations build new sets.
/// </summary>
public sealed record ImageSet(byte[] Pixels, long[] Labels, int Height, int Width)
{
    /// <summary>Number of images.</summary>
    public int Count => Labels.Length;

    /// <summary>Pixels per image.</summary>
    public int ImageSize => Height * Width;

    /// <summary>Checks that the pixel buffer matches the label count and image size.</summary>
    public ImageSet Validate(string label)
    {
        if (Height <= 0 || Width <= 0)
            throw new InvalidDataException($"{label}: image size {Height}x{Width} is not positive");
        if ((long)Labels.Length * Height * Width != Pixels.LongLength)
            throw new InvalidDataException(
                $"{label}: {Pixels.LongLength} pixel bytes do not hold {Labels.Length} images of {Height}x{Width}");
        return this;
    }

    /// <summary>The pixels of image <paramref name="index"/>.</summary>
    public ReadOnlySpan<byte> Image(int index) => Pixels.AsSpan(index * ImageSize, ImageSize);

    /// <summary>The first <paramref name="count"/> images (all of them when there are fewer).</summary>
    public ImageSet Take(int count)
    {
        int n = Math.Min(count, Count);
        return new ImageSet(Pixels.AsSpan(0, n * ImageSize).ToArray(), Labels.AsSpan(0, n).ToArray(), Height, Width);
    }

    /// <summary>The images whose indices are listed, in that order.</summary>
    public ImageSet Select(IReadOnlyList<int> indices)
    {
        var pixels = new byte[(long)indices.Count * ImageSize];
        var labels = new long[indices.Count];
        for (int k = 0; k < indices.Count; k++)
        {
            Image(indices[k]).CopyTo(pixels.AsSpan(k * ImageSize, ImageSize));
            labels[k] = Labels[indices[k]];
        }
        return new ImageSet(pixels, labels, Height, Width);
    }

    /// <summary>Concatenates sets of the same image size.</summary>
    public static ImageSet Concat(IReadOnlyList<ImageSet> sets)
    {
        if (sets.Count == 0) throw new ArgumentException("Concat: no image sets given");
        int h = sets[0].Height, w = sets[0].Width;
        if (sets.Any(s => s.Height != h || s.Width != w))
            throw new ArgumentException("Concat: image sets differ in image size");
        return new ImageSet(sets.SelectMany(s => s.Pixels).ToArray(), sets.SelectMany(s => s.Labels).ToArray(), h, w);
    }
}

/// <summary>A train and a test split of one data source, with its class names.</summary>
public sealed record SplitDataset(string Name, ImageSet Train, ImageSet Test, IReadOnlyList<string> Classes);
