namespace MergeDsl.Bench.Data;

/// <summary>Pixel-level transforms that give derived tasks their own input distribution.</summary>
public enum ImageTransform
{
    /// <summary>The image as is.</summary>
    None,
    /// <summary>Rotated 90 degrees counter-clockwise (numpy's <c>rot90(img, 1)</c>): out[i, j] = in[j, W-1-i].</summary>
    Rot90,
    /// <summary>Intensities inverted: 255 - v.</summary>
    Invert,
    /// <summary>Mirrored left-right: out[i, j] = in[i, W-1-j].</summary>
    FlipHorizontal,
    /// <summary>Upside down: out[i, j] = in[H-1-i, j].</summary>
    FlipVertical,
    /// <summary>
    /// Horizontal stripes laid over the image: every fourth row (i mod 4 = 1) is raised to at least
    /// <see cref="ImageTransforms.StripeLevel"/>; strokes brighter than that stay as they are.
    /// </summary>
    Stripes,
}

/// <summary>Applies <see cref="ImageTransform"/>s to whole image sets.</summary>
public static class ImageTransforms
{
    /// <summary>Intensity of the rows <see cref="ImageTransform.Stripes"/> lays over the image.</summary>
    public const byte StripeLevel = 160;

    /// <summary>Applies one transform to one H x W image (Rot90 needs a square image).</summary>
    public static void Apply(ImageTransform transform, ReadOnlySpan<byte> src, Span<byte> dst, int h, int w)
    {
        switch (transform)
        {
            case ImageTransform.None:
                src.CopyTo(dst);
                break;
            case ImageTransform.Invert:
                for (int k = 0; k < h * w; k++) dst[k] = (byte)(255 - src[k]);
                break;
            case ImageTransform.Rot90:
                if (h != w) throw new ArgumentException($"Rot90 needs square images, got {h}x{w}");
                for (int i = 0; i < h; i++)
                    for (int j = 0; j < w; j++)
                        dst[i * w + j] = src[j * w + (w - 1 - i)];
                break;
            case ImageTransform.FlipHorizontal:
                for (int i = 0; i < h; i++)
                    for (int j = 0; j < w; j++)
                        dst[i * w + j] = src[i * w + (w - 1 - j)];
                break;
            case ImageTransform.FlipVertical:
                for (int i = 0; i < h; i++)
                    src.Slice((h - 1 - i) * w, w).CopyTo(dst.Slice(i * w, w));
                break;
            case ImageTransform.Stripes:
                for (int i = 0; i < h; i++)
                    for (int j = 0; j < w; j++)
                        dst[i * w + j] = i % 4 == 1 ? Math.Max(src[i * w + j], StripeLevel) : src[i * w + j];
                break;
            default:
                throw new ArgumentOutOfRangeException(nameof(transform), transform, "unknown image transform");
        }
    }

    /// <summary>Applies transforms in order to every image; labels are kept.</summary>
    public static ImageSet Apply(ImageSet set, IReadOnlyList<ImageTransform> transforms)
    {
        var cur = set.Pixels;
        foreach (var t in transforms)
        {
            var next = new byte[cur.Length];
            for (int n = 0; n < set.Count; n++)
                Apply(t, cur.AsSpan(n * set.ImageSize, set.ImageSize), next.AsSpan(n * set.ImageSize, set.ImageSize), set.Height, set.Width);
            cur = next;
        }
        return set with { Pixels = cur, Labels = (long[])set.Labels.Clone() };
    }
}
