using System.Text.Json;

namespace MergeDsl.Core.Checkpoints;

/// <summary>
/// The one way loaders open files of a model folder, which is treated as hostile: only regular files
/// are opened (a FIFO would block, /dev/zero never ends), symbolic links are followed only inside the
/// folder or from a Hugging Face cache snapshot into its repository's <c>blobs/</c>, small JSON files have
/// a size bound, and a folder holding <see cref="OutputMarkers.Unfinished"/> is refused.
/// </summary>
public static class ModelFiles
{
    /// <summary>Largest index, config or other JSON file read whole (real indexes are well under 10 MB).</summary>
    public const long MaxJsonBytes = 64L << 20;

    /// <summary>Largest unfinished-output marker read to find its pid.</summary>
    const long MaxMarkerBytes = 64 << 10;

    /// <summary>
    /// Opens <paramref name="file"/> for reading after checking the folder is not an unfinished output,
    /// where the path resolves to (see <see cref="CheckPlace"/>), and that it is a regular file; checks
    /// again through the open handle, so a FIFO swapped in meanwhile is refused rather than waited on.
    /// </summary>
    /// <param name="file">The file.</param>
    /// <param name="modelFolder">The model folder it belongs to; null: the folder holding it.</param>
    /// <param name="policy">Link policy; null: <see cref="InputFilePolicy.FromEnvironment"/>.</param>
    /// <exception cref="CheckpointFormatException">Refused (the message names the file and why).</exception>
    /// <exception cref="FileNotFoundException">Nothing at <paramref name="file"/>.</exception>
    public static OpenedFile OpenRead(string file, string? modelFolder = null, InputFilePolicy? policy = null)
    {
        var before = Check(file, modelFolder, policy);
        var handle = UnixFiles.OpenReadNonBlocking(file);
        try
        {
            var opened = UnixFiles.Stat(handle, file);
            if (opened.Kind != FileKind.Regular || !opened.SameFileAs(before))
                throw new CheckpointFormatException(file, $"was replaced while being opened (now {opened.KindText}); only regular files are read");
            return new OpenedFile(file, handle, opened);
        }
        catch
        {
            handle.Dispose();
            throw;
        }
    }

    /// <summary>
    /// The checks of <see cref="OpenRead"/> without opening: not in an unfinished output, resolving to an
    /// allowed place, a regular file. Returns what stat said.
    /// </summary>
    public static FileIdentity Check(string file, string? modelFolder = null, InputFilePolicy? policy = null)
    {
        policy ??= InputFilePolicy.FromEnvironment();
        string folder = modelFolder ?? Path.GetDirectoryName(Path.GetFullPath(file))!;
        RefuseUnfinished(folder);
        var stat = UnixFiles.TryStat(file, followLinks: true);
        if (stat is null)
        {
            if (UnixFiles.TryStat(file, followLinks: false) is { Kind: FileKind.SymbolicLink })
                throw new CheckpointFormatException(file, $"is a symbolic link to {LinkText(file)}, which does not exist");
            throw new FileNotFoundException($"{file}: no such file", file);
        }
        CheckPlace(file, folder, policy);
        if (stat.Value.Kind != FileKind.Regular)
            throw new CheckpointFormatException(file, $"is {stat.Value.KindText}, not a regular file; only regular files are read");
        return stat.Value;
    }

    /// <summary>
    /// Reads a whole small file (index, config, tokenizer) of at most <paramref name="maxBytes"/> bytes,
    /// through <see cref="OpenRead"/>.
    /// </summary>
    public static byte[] ReadAll(string file, long maxBytes, string? modelFolder = null, InputFilePolicy? policy = null)
    {
        using var f = OpenRead(file, modelFolder, policy);
        long size = f.Identity.Size;
        if (size > maxBytes)
            throw new CheckpointFormatException(file, $"is {size} bytes, over the {maxBytes}-byte limit for this kind of file");
        var bytes = new byte[size];
        int done = 0;
        while (done < bytes.Length)
        {
            int n = RandomAccess.Read(f.Handle, bytes.AsSpan(done), done);
            if (n == 0) throw new CheckpointFormatException(file, $"shrank while being read ({done} of {size} bytes)");
            done += n;
        }
        return bytes;
    }

    /// <summary>A JSON/text file of a model folder as a string (at most <see cref="MaxJsonBytes"/>).</summary>
    public static string ReadText(string file, string? modelFolder = null, InputFilePolicy? policy = null) =>
        System.Text.Encoding.UTF8.GetString(ReadAll(file, MaxJsonBytes, modelFolder, policy));

    /// <summary>
    /// Refuses <paramref name="file"/> unless its real path (every link resolved) lies inside the real
    /// path of <paramref name="modelFolder"/>, or the folder is inside a Hugging Face cache snapshot
    /// (<c>&lt;repo&gt;/snapshots/&lt;rev&gt;</c>) and the file resolves into <c>&lt;repo&gt;/blobs/</c>, or the
    /// policy allows links outside.
    /// </summary>
    public static void CheckPlace(string file, string modelFolder, InputFilePolicy policy)
    {
        string? real = UnixFiles.RealPath(file);
        if (real is null) throw new FileNotFoundException($"{file}: no such file", file);
        string realFolder = UnixFiles.RealPath(modelFolder) ?? Path.GetFullPath(modelFolder);
        if (IsInside(real, realFolder)) return;
        if (HubBlobs(realFolder) is { } blobs && IsInside(real, blobs)) return;
        if (policy.AllowLinksOutside) return;
        string how = UnixFiles.TryStat(file, followLinks: false) is { Kind: FileKind.SymbolicLink }
            ? $"is a symbolic link to {real}"
            : $"resolves (through a linked folder) to {real}";
        throw new CheckpointFormatException(file,
            $"{how}, outside the model folder {realFolder}; only links inside it, or from a Hugging Face cache snapshot into its blobs/, are followed ({InputFilePolicy.AllowLinksOutsideVariable}=1 allows others)");
    }

    /// <summary>
    /// Refuses a folder holding <see cref="OutputMarkers.Unfinished"/>: a temporary output of a running
    /// or crashed mergedsl run, whose files may be half written.
    /// </summary>
    public static void RefuseUnfinished(string folder)
    {
        string marker = Path.Combine(folder, OutputMarkers.Unfinished);
        if (UnixFiles.TryStat(marker, followLinks: false) is not { } stat) return;
        string pid = "unknown";
        if (stat.Kind == FileKind.Regular && stat.Size <= MaxMarkerBytes)
        {
            try
            {
                using var handle = UnixFiles.OpenReadNonBlocking(marker);
                var bytes = new byte[stat.Size];
                int n0 = RandomAccess.Read(handle, bytes, 0);
                using var doc = JsonDocument.Parse(bytes.AsMemory(0, n0));
                if (doc.RootElement.ValueKind == JsonValueKind.Object && doc.RootElement.TryGetProperty("pid", out var p) && p.TryGetInt64(out long n))
                    pid = n.ToString(System.Globalization.CultureInfo.InvariantCulture);
            }
            catch (Exception e) when (e is IOException or JsonException or UnauthorizedAccessException) { }
        }
        throw new CheckpointFormatException(folder, $"unfinished output of a mergedsl run (pid {pid}); it is not a model");
    }

    /// <summary>The hub cache's blobs folder for a folder inside <c>&lt;repo&gt;/snapshots/&lt;rev&gt;</c>, else null.</summary>
    static string? HubBlobs(string realFolder)
    {
        for (var d = new DirectoryInfo(realFolder); d.Parent?.Parent is { } repo; d = d.Parent)
        {
            if (d.Parent.Name == "snapshots") return Path.Combine(repo.FullName, "blobs");
        }
        return null;
    }

    static bool IsInside(string path, string folder)
    {
        string f = folder.TrimEnd('/');
        return path == f || path.StartsWith(f + "/", StringComparison.Ordinal) || f.Length == 0;
    }

    static string LinkText(string file)
    {
        try { return new FileInfo(file).LinkTarget ?? "?"; }
        catch (IOException) { return "?"; }
    }
}
