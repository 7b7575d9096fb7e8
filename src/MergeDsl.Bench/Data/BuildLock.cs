namespace MergeDsl.Bench.Data;

/// <summary>
/// An exclusive lock on a cache entry that is built once and then reused (a zoo folder): a second builder, in this
/// process or another, waits until the first has finished and then finds the entry complete instead of writing the
/// same files at the same time. The lock is a file opened with <see cref="FileShare.None"/> (flock on Unix).
/// </summary>
public sealed class BuildLock : IDisposable
{
    readonly FileStream stream;

    BuildLock(FileStream stream) => this.stream = stream;

    /// <summary>Waits for and takes the lock <paramref name="path"/>, logging once while another builder holds it.</summary>
    public static BuildLock Acquire(string path, Action<string>? log = null)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
        bool told = false;
        while (true)
        {
            try
            {
                return new BuildLock(new FileStream(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None, 1, FileOptions.None));
            }
            catch (IOException) when (File.Exists(path))
            {
                if (!told) log?.Invoke($"waiting for another build holding {path}");
                told = true;
                Thread.Sleep(500);
            }
        }
    }

    /// <summary>Releases the lock (the lock file stays: removing it could race with the next builder's open).</summary>
    public void Dispose() => stream.Dispose();
}
