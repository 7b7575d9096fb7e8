using MergeDsl.Build;

namespace MergeDsl.Core.Torch;

/// <summary>
/// Makes sure TorchSharp's native glue can load before the first tensor operation. The build already
/// applies the Debian 12 fix (build/TorchSharpFix.targets); this covers copies the build did not see,
/// such as an application folder copied from another machine.
/// </summary>
public static class TorchRuntime
{
    static readonly Lazy<IReadOnlyList<string>> Checked = new(PatchNextToApplication);

    /// <summary>Applies the fix to the libLibTorchSharp.so beside the application, once per process.</summary>
    public static IReadOnlyList<string> EnsureLoadable() => Checked.Value;

    /// <summary>The copies of libLibTorchSharp.so a program started from <paramref name="baseDir"/> may load.</summary>
    public static IEnumerable<string> CandidateLibraries(string baseDir)
    {
        yield return Path.Combine(baseDir, "runtimes", "linux-x64", "native", "libLibTorchSharp.so");
        yield return Path.Combine(baseDir, "libLibTorchSharp.so");
    }

    /// <summary>The NuGet cache copies that <c>dotnet fsi</c> scripts load from.</summary>
    public static IEnumerable<string> NuGetCacheLibraries(string torchSharpVersion = "0.107.0")
    {
        string root = Environment.GetEnvironmentVariable("NUGET_PACKAGES")
            ?? Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages");
        string pkg = Path.Combine(root, "torchsharp", torchSharpVersion);
        yield return Path.Combine(pkg, "runtimes", "linux-x64", "native", "libLibTorchSharp.so");
        yield return Path.Combine(pkg, "lib", "net8.0", "cpu", "libLibTorchSharp.so");
    }

    /// <summary>Patches each existing file if this machine needs it; returns the files it changed.</summary>
    public static IReadOnlyList<string> PatchIfNeeded(IEnumerable<string> files)
    {
        var changed = new List<string>();
        if (!ElfVerneedPatcher.SystemLibStdCxxLacksRequiredVersion()) return changed;
        foreach (string file in files.Distinct())
        {
            if (!File.Exists(file)) continue;
            try
            {
                if (ElfVerneedPatcher.Apply(file) == PatchOutcome.Patched) changed.Add(file);
            }
            catch (IOException) { /* read-only install: the loader's own error will say more */ }
            catch (UnauthorizedAccessException) { }
        }
        return changed;
    }

    static IReadOnlyList<string> PatchNextToApplication() => PatchIfNeeded(CandidateLibraries(AppContext.BaseDirectory));
}
