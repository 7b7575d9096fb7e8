using System.Text.Json;

namespace MergeDsl.Core.Checkpoints;

/// <summary>
/// One output folder reserved for one run, the machinery every command that writes a model shares: the path is
/// canonical (<see cref="RealPath"/>) and checked against the inputs, an <see cref="OutputLock"/> keeps other runs
/// out, leftovers of dead runs are removed, results are built in marked temporary folders and renamed in by
/// <see cref="Commit"/>. Disposing releases the lock (and removes the parent folders it created, when nothing was
/// committed).
/// </summary>
public sealed class OutputFolder : IDisposable
{
    readonly OutputLock _lock;
    readonly bool _overwrite;
    readonly List<string> _createdParents;
    bool _committed;
    bool _disposed;

    OutputFolder(string target, bool overwrite, OutputLock outputLock, List<string> createdParents)
    {
        Target = target;
        _overwrite = overwrite;
        _lock = outputLock;
        _createdParents = createdParents;
    }

    /// <summary>The canonical output path.</summary>
    public string Target { get; }

    /// <summary>
    /// Checks <paramref name="target"/> and takes its lock. Refused (<see cref="OutputRefusedException"/>) when it
    /// is a file, is, contains or lies inside an input folder, is or contains an input file, or exists and either
    /// <paramref name="overwrite"/> is off or it is neither empty nor a mergedsl output. <see cref="OutputLockedException"/>
    /// when another run holds it. <paramref name="overwriteHint"/> names the option that allows replacing, for messages.
    /// With <paramref name="resume"/>, the temporary folders of dead runs that keep a <see cref="ShardJournal"/> are left
    /// for <see cref="AdoptTemporary"/> instead of removed.
    /// </summary>
    public static OutputFolder Reserve(string target, bool overwrite, IEnumerable<OutputInput>? inputs = null,
        string overwriteHint = "allow overwriting", bool resume = false)
    {
        string label = target;
        string real = RealPath.Resolve(target);
        var checkedInputs = (inputs ?? []).Select(i => i with { Path = RealPath.Resolve(i.Path) }).ToList();
        Check(label, real, overwrite, checkedInputs, overwriteHint);
        var created = CreateParents(real);
        OutputLock? held = null;
        try
        {
            held = OutputLock.Acquire(real);
            // Another run may have committed between the check and the lock.
            Check(label, real, overwrite, checkedInputs, overwriteHint);
            RemoveStale(real, keepJournaled: resume);
            return new OutputFolder(real, overwrite, held, created);
        }
        catch
        {
            held?.Dispose();
            RemoveEmpty(created);
            throw;
        }
    }

    /// <summary>
    /// The checks of <see cref="Reserve"/> without taking the lock or creating anything, for reporting a bad output
    /// before any other work (the reservation checks again).
    /// </summary>
    public static void Validate(string target, bool overwrite, IEnumerable<OutputInput>? inputs = null,
        string overwriteHint = "allow overwriting")
    {
        var checkedInputs = (inputs ?? []).Select(i => i with { Path = RealPath.Resolve(i.Path) }).ToList();
        Check(target, RealPath.Resolve(target), overwrite, checkedInputs, overwriteHint);
    }

    static void Check(string label, string real, bool overwrite, IReadOnlyList<OutputInput> inputs, string hint)
    {
        if (File.Exists(real)) throw new OutputRefusedException($"{label}: is a file, not a folder");
        foreach (var input in inputs)
        {
            bool folder = Directory.Exists(input.Path);
            if (RealPath.IsSameOrInside(input.Path, real))
                throw new OutputRefusedException(string.Equals(input.Path, real, StringComparison.Ordinal)
                    ? $"{label}: is also an input ({input.Role} {input.Given})"
                    : $"{label}: contains an input ({input.Role} {input.Given}); writing it would destroy that input");
            if (folder && RealPath.IsSameOrInside(real, input.Path))
                throw new OutputRefusedException($"{label}: lies inside an input ({input.Role} {input.Given})");
        }
        if (!Directory.Exists(real)) return;
        if (!overwrite) throw new OutputRefusedException($"{label}: already exists ({hint} to replace it)");
        if (!IsReplaceable(real))
            throw new OutputRefusedException(
                $"{label}: not replaced: it is not empty and was not written by mergedsl (no {OutputMarkers.Finished}); remove it yourself or choose another output");
    }

    /// <summary>
    /// True when <paramref name="folder"/> is empty or was written by mergedsl: it holds <see cref="OutputMarkers.Finished"/>,
    /// or (outputs of versions before that file) its checkpoint's metadata has a key starting with "mergedsl".
    /// A folder holding <see cref="OutputMarkers.Unfinished"/> is never a finished output.
    /// </summary>
    public static bool IsReplaceable(string folder)
    {
        if (!Directory.EnumerateFileSystemEntries(folder).Any()) return true;
        if (File.Exists(Path.Combine(folder, OutputMarkers.Unfinished))) return false;
        var marker = new FileInfo(Path.Combine(folder, OutputMarkers.Finished));
        if (marker.Exists && marker.LinkTarget is null) return true;
        return HasMergeDslMetadata(folder);
    }

    /// <summary>Largest header read when looking for mergedsl metadata; ours are far smaller.</summary>
    const long MaxHeaderBytes = 64 << 20;

    static bool HasMergeDslMetadata(string folder)
    {
        var file = new FileInfo(Path.Combine(folder, Checkpoint.SingleFileName));
        if (!file.Exists)
            file = new DirectoryInfo(folder).EnumerateFiles("model-00001-of-*.safetensors").FirstOrDefault() ?? file;
        if (!file.Exists || file.LinkTarget is not null || file.Length < 8) return false;
        try
        {
            using var stream = file.OpenRead();
            var prefix = new byte[8];
            stream.ReadExactly(prefix);
            ulong n = BitConverter.ToUInt64(prefix);
            if (n > (ulong)Math.Min(MaxHeaderBytes, file.Length - 8)) return false;
            var header = new byte[n];
            stream.ReadExactly(header);
            using var doc = JsonDocument.Parse(header);
            return doc.RootElement.TryGetProperty("__metadata__", out var meta) && meta.ValueKind == JsonValueKind.Object
                && meta.EnumerateObject().Any(p => p.Name.StartsWith("mergedsl", StringComparison.Ordinal));
        }
        catch (Exception e) when (e is IOException or JsonException or UnauthorizedAccessException)
        {
            return false;
        }
    }

    static List<string> CreateParents(string real)
    {
        var missing = new List<string>();
        for (string? p = Path.GetDirectoryName(real); p is not null && !Directory.Exists(p); p = Path.GetDirectoryName(p))
            missing.Add(p);
        missing.Reverse();
        foreach (var p in missing) Directory.CreateDirectory(p);
        return missing;
    }

    static void RemoveEmpty(List<string> created)
    {
        for (int i = created.Count - 1; i >= 0; i--)
        {
            try
            {
                if (Directory.Exists(created[i]) && !Directory.EnumerateFileSystemEntries(created[i]).Any()) Directory.Delete(created[i]);
            }
            catch (IOException) { }
            catch (UnauthorizedAccessException) { }
        }
    }

    /// <summary>
    /// Removes <c>&lt;out&gt;.tmp-*</c> and <c>&lt;out&gt;.old-*</c> folders that carry the unfinished marker of an
    /// owner that is gone. Called with the lock held, so no live run of this output can own one; the owner check
    /// still protects a live process on this machine. Folders without the marker are never touched.
    /// </summary>
    static void RemoveStale(string real, bool keepJournaled = false)
    {
        foreach (var dir in DeadFolders(real))
        {
            if (keepJournaled && dir.Name.StartsWith(Path.GetFileName(real) + ".tmp-", StringComparison.Ordinal)
                && File.Exists(Path.Combine(dir.FullName, ShardJournal.FileName))) continue;
            dir.Delete(recursive: true);
        }
    }

    /// <summary><c>&lt;out&gt;.tmp-*</c> and <c>&lt;out&gt;.old-*</c> folders carrying the unfinished marker of an owner that is gone.</summary>
    static IEnumerable<DirectoryInfo> DeadFolders(string real)
    {
        string parent = Path.GetDirectoryName(real)!;
        string name = Path.GetFileName(real);
        foreach (var dir in new DirectoryInfo(parent).EnumerateDirectories(name + ".*").ToList())
        {
            if (dir.LinkTarget is not null) continue;
            string rest = dir.Name[name.Length..];
            if (!rest.StartsWith(".tmp-", StringComparison.Ordinal) && !rest.StartsWith(".old-", StringComparison.Ordinal)) continue;
            var marker = UnfinishedMarker.TryRead(dir.FullName);
            if (marker is null || marker.OwnerAlive()) continue;
            yield return dir;
        }
    }

    /// <summary>
    /// For a resumed run: takes over the temporary folder of a dead run of <paramref name="identity"/> (the one whose
    /// journal lists the most finished shards), marking it as this process's, and removes every other dead run's folder.
    /// Null when there is none; the caller then starts a fresh one with <see cref="CreateTemporary"/>.
    /// </summary>
    public string? AdoptTemporary(string identity)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        DirectoryInfo? best = null;
        int bestCount = -1;
        var dead = DeadFolders(Target).ToList();
        foreach (var dir in dead)
        {
            if (!dir.Name.StartsWith(Path.GetFileName(Target) + ".tmp-", StringComparison.Ordinal)) continue;
            var journal = ShardJournal.TryRead(dir.FullName);
            if (journal is null || !string.Equals(journal.Value.Identity, identity, StringComparison.Ordinal)) continue;
            if (journal.Value.Shards.Count > bestCount) (best, bestCount) = (dir, journal.Value.Shards.Count);
        }
        foreach (var dir in dead)
            if (dir != best) dir.Delete(recursive: true);
        if (best is null) return null;
        File.Delete(Path.Combine(best.FullName, OutputMarkers.Unfinished));
        UnfinishedMarker.ForCurrentProcess().WriteTo(best.FullName);
        return best.FullName;
    }

    /// <summary>Creates a fresh temporary folder beside the target, holding the unfinished marker of this process.</summary>
    public string CreateTemporary()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        string temp = $"{Target}.tmp-{Guid.NewGuid().ToString("N")[..8]}";
        Directory.CreateDirectory(temp);
        try
        {
            UnfinishedMarker.ForCurrentProcess().WriteTo(temp);
        }
        catch
        {
            Directory.Delete(temp, recursive: true);
            throw;
        }
        return temp;
    }

    /// <summary>
    /// Renames <paramref name="temp"/> (from <see cref="CreateTemporary"/>) into place. Replacing an existing folder,
    /// the old one steps aside first and is deleted only after the new one is in; if the rename in fails the old
    /// one is put back.
    /// </summary>
    public void Commit(string temp)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (_committed) throw new InvalidOperationException($"{Target}: already committed");
        File.WriteAllText(Path.Combine(temp, OutputMarkers.Finished),
            JsonSerializer.Serialize(new { writer = "mergedsl", writtenUtc = DateTime.UtcNow.ToString("O") }));
        if (!Directory.Exists(Target))
        {
            File.Delete(Path.Combine(temp, OutputMarkers.Unfinished));
            Directory.Move(temp, Target);
            _committed = true;
            return;
        }
        if (!_overwrite || !IsReplaceable(Target)) throw new OutputRefusedException($"{Target}: appeared during the run; not replaced");
        string old = $"{Target}.old-{Guid.NewGuid().ToString("N")[..8]}";
        File.Delete(Path.Combine(temp, OutputMarkers.Unfinished));
        Directory.Move(Target, old);
        try
        {
            Directory.Move(temp, Target);
        }
        catch
        {
            Directory.Move(old, Target);
            UnfinishedMarker.ForCurrentProcess().WriteTo(temp);
            throw;
        }
        _committed = true;
        // Marked before deleting, so a kill during the deletion leaves a folder the next run removes.
        UnfinishedMarker.ForCurrentProcess().WriteTo(old);
        Directory.Delete(old, recursive: true);
    }

    /// <summary>Releases the lock; without a commit, also removes the parent folders <see cref="Reserve"/> created.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _lock.Dispose();
        if (!_committed) RemoveEmpty(_createdParents);
    }
}

/// <summary>An input of a run, for <see cref="OutputFolder.Reserve"/>'s overlap checks.</summary>
/// <param name="Role">How the user gave it (e.g. "--model").</param>
/// <param name="Given">The path as given (for messages).</param>
/// <param name="Path">The path to compare (canonicalised by <see cref="OutputFolder.Reserve"/>).</param>
public sealed record OutputInput(string Role, string Given, string Path)
{
    /// <summary>An input given as <paramref name="path"/>.</summary>
    public static OutputInput Of(string role, string path) => new(role, path, path);
}
