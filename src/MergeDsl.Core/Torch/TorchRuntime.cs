using MergeDsl.Build;

namespace MergeDsl.Core.Torch;

/// <summary>
/// Makes sure TorchSharp's native glue can load before the first tensor operation. The build already
/// applies the Debian 12 fix (build/TorchSharpFix.targets); this covers copies the build did not see:
/// an application folder copied from another machine, the installed <c>mergedsl</c> tool, and the NuGet
/// package folder that scripts referencing the MergeDsl package load TorchSharp from.
/// </summary>
public static class TorchRuntime
{
    static readonly Lazy<IReadOnlyList<string>> Checked = new(PatchNextToApplication);

    /// <summary>
    /// Applies the fix, once per process, to the libLibTorchSharp.so beside the application (a built program,
    /// an installed <c>mergedsl</c> tool) and to the copies beside the loaded TorchSharp assembly (a NuGet
    /// package folder, as in <c>dotnet fsi</c>). Call it before the first tensor operation; the library's own
    /// entry points (device choice, model loading) do.
    /// </summary>
    public static IReadOnlyList<string> EnsureLoadable() => Checked.Value;

    /// <summary>The copies of libLibTorchSharp.so a program started from <paramref name="baseDir"/> may load.</summary>
    // Arrays, not iterators: fsdocs cannot read the docs of iterator methods (their state-machine attribute).
    public static IReadOnlyList<string> CandidateLibraries(string baseDir) =>
    [
        Path.Combine(baseDir, "runtimes", "linux-x64", "native", "libLibTorchSharp.so"),
        Path.Combine(baseDir, "libLibTorchSharp.so"),
    ];

    /// <summary>The NuGet cache copies that <c>dotnet fsi</c> scripts load from.</summary>
    public static IReadOnlyList<string> NuGetCacheLibraries(string torchSharpVersion = "0.107.0")
    {
        string root = Environment.GetEnvironmentVariable("NUGET_PACKAGES")
            ?? Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages");
        string pkg = Path.Combine(root, "torchsharp", torchSharpVersion);
        return
        [
            Path.Combine(pkg, "runtimes", "linux-x64", "native", "libLibTorchSharp.so"),
            Path.Combine(pkg, "lib", "net8.0", "cpu", "libLibTorchSharp.so"),
        ];
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

    /// <summary>
    /// The copies TorchSharp loads when its assembly comes from a NuGet package folder rather than from
    /// beside the program (<c>dotnet fsi</c> or a notebook with <c>#r "nuget: MergeDsl"</c>): the package's
    /// <c>runtimes/linux-x64/native</c> copy and the <c>lib/net8.0/cpu</c> folder TorchSharp consolidates the
    /// natives into on first use (made from the former, so patching that first patches the copy too).
    /// </summary>
    public static IReadOnlyList<string> BesideTorchSharp(string torchSharpAssemblyPath)
    {
        string lib = Path.GetDirectoryName(Path.GetFullPath(torchSharpAssemblyPath)) ?? ".";
        return
        [
            Path.GetFullPath(Path.Combine(lib, "..", "..", "runtimes", "linux-x64", "native", "libLibTorchSharp.so")),
            Path.Combine(lib, "cpu", "libLibTorchSharp.so"),
        ];
    }

    /// <summary>
    /// Runs <see cref="EnsureLoadable"/> when the core is first used, before any of its code touches TorchSharp:
    /// a script or notebook that references the MergeDsl package, and the installed tool, then load a fixed
    /// copy without having to know about the fix. Never throws: a copy it cannot fix fails later, in the
    /// loader, with the loader's own message.
    /// </summary>
#pragma warning disable CA2255 // A library initialiser is the point here: the fix must precede any TorchSharp use the caller makes through the library.
    [System.Runtime.CompilerServices.ModuleInitializer]
#pragma warning restore CA2255
    internal static void FixBeforeFirstUse()
    {
        try { EnsureLoadable(); }
        catch (Exception) { /* see summary: the loader reports what is wrong */ }
    }

    // typeof does not run TorchSharp's type initialisers, so finding its assembly loads no native code.
    // (Location is empty in a single-file bundle: then only the application's own folder counts.)
    static IReadOnlyList<string> PatchNextToApplication()
    {
        string torchSharp = typeof(TorchSharp.torch).Assembly.Location;
        return PatchIfNeeded(CandidateLibraries(AppContext.BaseDirectory)
            .Concat(torchSharp.Length > 0 ? BesideTorchSharp(torchSharp) : []));
    }
}
