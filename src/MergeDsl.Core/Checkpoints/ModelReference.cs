namespace MergeDsl.Core.Checkpoints;

/// <summary>
/// A model as a user names it, resolved to local folders: a path, a Hugging Face repo id (<c>org/name</c>,
/// <c>org/name@revision</c>) found offline in the hub cache, and optionally <c>model+adapter</c> (mergekit's
/// syntax for a PEFT LoRA adapter applied to the model before merging; the adapter is a path or repo id too).
/// </summary>
/// <param name="Text">The reference as given.</param>
/// <param name="Folder">The model's folder (or safetensors file), full path.</param>
/// <param name="Adapter">The adapter's folder, full path, when the reference has one.</param>
public sealed record ModelReference(string Text, string Folder, string? Adapter)
{
    /// <summary>The resolved reference as one string (<c>folder</c> or <c>folder+adapter</c>); resolving it again gives the same folders.</summary>
    public string Canonical => Adapter is null ? Folder : Folder + "+" + Adapter;

    /// <summary>
    /// Resolves <paramref name="text"/>. A local path wins over a repo id of the same spelling (as in transformers'
    /// <c>from_pretrained</c> and mergekit): a relative path is looked up in each of <paramref name="searchFolders"/>
    /// in order (none: the working directory), then, if it is shaped like a repo id, in the hub cache. Text holding
    /// <c>+</c> that is not itself a local path is split at the first <c>+</c> whose two sides both resolve.
    /// </summary>
    /// <exception cref="ModelReferenceException">Nothing found; the message is one line naming the reference.</exception>
    public static ModelReference Resolve(string text, IReadOnlyList<string>? searchFolders = null, HubCache? cache = null)
    {
        if (string.IsNullOrWhiteSpace(text)) throw new ModelReferenceException("empty model reference");
        var folders = searchFolders is { Count: > 0 } ? searchFolders : [Directory.GetCurrentDirectory()];
        if (TryLocal(text, folders) is { } local) return new ModelReference(text, local, null);
        if (!text.Contains('+')) return new ModelReference(text, ResolvePart(text, folders, cache, "model"), null);
        ModelReferenceException? first = null;
        for (int i = text.IndexOf('+'); i >= 0; i = text.IndexOf('+', i + 1))
        {
            try
            {
                string model = ResolvePart(text[..i], folders, cache, "model");
                string adapter = ResolvePart(text[(i + 1)..], folders, cache, "adapter");
                return new ModelReference(text, model, adapter);
            }
            catch (ModelReferenceException e)
            {
                first ??= e;
            }
        }
        throw new ModelReferenceException($"{text}: {first!.Message}");
    }

    static string? TryLocal(string text, IReadOnlyList<string> folders)
    {
        var candidates = Path.IsPathRooted(text) ? [text] : folders.Select(f => Path.Combine(f, text));
        foreach (var c in candidates)
            if (Directory.Exists(c) || File.Exists(c)) return Path.TrimEndingDirectorySeparator(Path.GetFullPath(c));
        return null;
    }

    static string ResolvePart(string part, IReadOnlyList<string> folders, HubCache? cache, string what)
    {
        if (part.Length == 0) throw new ModelReferenceException($"empty {what} in a model+adapter reference");
        if (TryLocal(part, folders) is { } local) return local;
        string where = Path.IsPathRooted(part) ? "" : $" (looked in {string.Join(", ", folders)})";
        if (!Path.IsPathRooted(part) && HubCache.LooksLikeRepoId(part))
        {
            var (id, revision) = HubCache.SplitRevision(part);
            var hub = cache ?? HubCache.FromEnvironment();
            // A bare name (no org, no revision) is as likely a mistyped folder as a repo id: say both.
            if (!id.Contains('/') && revision is null && !Directory.Exists(hub.RepoFolder(id)))
                throw new ModelReferenceException(
                    $"{part}: no such {what} folder or file{where}, and not in the Hugging Face cache at {hub.Root} (no network access; download it first)");
            return hub.Resolve(id, revision);
        }
        throw new ModelReferenceException($"{part}: no such {what} folder or file{where}, and not a Hugging Face repo id");
    }
}
