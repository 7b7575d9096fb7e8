namespace MergeDsl.Core.Checkpoints;

/// <summary>
/// An exclusive lock on an output path: an OS file lock on <c>&lt;out&gt;.lock</c> (an open with
/// <see cref="FileShare.None"/>, which .NET takes with <c>flock</c> on Unix and a share-mode lock on Windows).
/// The kernel drops it when the process dies, so a killed run never leaves a stale lock. The lock file is
/// removed on release.
/// </summary>
public sealed class OutputLock : IDisposable
{
    /// <summary>Bound on retries when the lock file is removed between our open and our lock.</summary>
    const int MaxAttempts = 10;

    readonly FileStream _stream;
    bool _disposed;

    OutputLock(string path, FileStream stream)
    {
        Path = path;
        _stream = stream;
    }

    /// <summary>The lock file.</summary>
    public string Path { get; }

    /// <summary>The lock file used for <paramref name="target"/> (a canonical path).</summary>
    public static string LockFileOf(string target) => target + ".lock";

    /// <summary>Takes the lock at once or throws <see cref="OutputLockedException"/>; never waits.</summary>
    public static OutputLock Acquire(string target)
    {
        string path = LockFileOf(target);
        for (int attempt = 0; attempt < MaxAttempts; attempt++)
        {
            FileStream stream;
            try
            {
                stream = new FileStream(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None, 1, FileOptions.None);
            }
            catch (IOException e) when (e is not FileNotFoundException and not DirectoryNotFoundException and not PathTooLongException)
            {
                throw new OutputLockedException(target, path);
            }
            // A releasing holder unlinks the file after we opened it: our lock would then be on a file nobody else
            // can find. Only a lock on the file the path still names counts.
            if (StillNamed(stream, path)) return new OutputLock(path, stream);
            stream.Dispose();
        }
        throw new IOException($"{path}: the lock file keeps disappearing; is another program removing it?");
    }

    static bool StillNamed(FileStream stream, string path)
    {
        if (!File.Exists(path)) return false;
        // On Linux /proc names what an open descriptor refers to, with " (deleted)" once it is unlinked.
        string fdLink = $"/proc/self/fd/{stream.SafeFileHandle.DangerousGetHandle()}";
        if (!OperatingSystem.IsLinux() || !File.Exists(fdLink)) return true;
        string? target = new FileInfo(fdLink).LinkTarget;
        return target is not null && !target.EndsWith(" (deleted)", StringComparison.Ordinal);
    }

    /// <summary>Removes the lock file (while still holding it, so no one else can hold a lock on it) and releases.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        try { File.Delete(Path); }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
        _stream.Dispose();
    }
}
