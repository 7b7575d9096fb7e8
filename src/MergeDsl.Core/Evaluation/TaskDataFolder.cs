using MergeDsl.Core.Checkpoints;
using TorchSharp;
using static TorchSharp.torch;

namespace MergeDsl.Core.Evaluation;

/// <summary>
/// The data folder format of <c>mergedsl eval</c> and <c>mergedsl adapt</c>: one
/// <c>&lt;task&gt;.safetensors</c> per task with <c>images</c> [N, C, H, W] F32 or U8 ([N, H, W] is read as one
/// channel) and <c>labels</c> [N] I64 (I32 accepted; optional for adaptation).
/// </summary>
public static class TaskDataFolder
{
    /// <summary>Task names present in a folder, sorted.</summary>
    public static IReadOnlyList<string> Tasks(string folder)
    {
        if (!Directory.Exists(folder)) throw new DirectoryNotFoundException($"{folder}: no such data folder");
        return Directory.GetFiles(folder, "*.safetensors").Select(f => Path.GetFileNameWithoutExtension(f))
            .OrderBy(t => t, StringComparer.Ordinal).ToList();
    }

    /// <summary>Loads one task file; <paramref name="requireLabels"/> makes missing labels an error.</summary>
    public static TaskData Load(string file, bool requireLabels)
    {
        string task = Path.GetFileNameWithoutExtension(file);
        using var ck = Checkpoint.Open(file, zeroCopy: false);
        if (!ck.TryGetInfo("images", out var imgInfo))
            throw new CheckpointFormatException(file, "no tensor 'images' ([N, C, H, W] F32 or U8)");
        if (imgInfo.DType is not (DType.F32 or DType.U8))
            throw new CheckpointFormatException(file, $"images has dtype {DTypes.ToSafetensorsName(imgInfo.DType)}, expected F32 or U8");
        if (imgInfo.Shape.Length is not (3 or 4))
            throw new CheckpointFormatException(file, $"images has shape [{string.Join(",", imgInfo.Shape)}], expected [N, C, H, W] or [N, H, W]");
        var images = ck.Load("images");
        if (images.dim() == 3) images = images.unsqueeze(1);
        Tensor? labels = null;
        if (ck.TryGetInfo("labels", out var labInfo))
        {
            if (labInfo.DType is not (DType.I64 or DType.I32) || labInfo.Shape.Length != 1 || labInfo.Shape[0] != imgInfo.Shape[0])
                throw new CheckpointFormatException(file,
                    $"labels must be [N={imgInfo.Shape[0]}] I64, got [{string.Join(",", labInfo.Shape)}] {DTypes.ToSafetensorsName(labInfo.DType)}");
            using var raw = ck.Load("labels");
            labels = raw.to(ScalarType.Int64);
        }
        else if (requireLabels) throw new CheckpointFormatException(file, "no tensor 'labels' ([N] I64); evaluation needs labels");
        return new TaskData(task, images, labels);
    }

    /// <summary>Loads the tasks of a folder (all of them, or those named).</summary>
    public static IReadOnlyList<TaskData> LoadAll(string folder, bool requireLabels, IEnumerable<string>? only = null)
    {
        var tasks = Tasks(folder);
        var wanted = only?.ToList() ?? tasks.ToList();
        foreach (var t in wanted)
            if (!tasks.Contains(t)) throw new FileNotFoundException($"{folder}: no data file {t}.safetensors");
        return wanted.Select(t => Load(Path.Combine(folder, t + ".safetensors"), requireLabels)).ToList();
    }

    /// <summary>Writes a task file in this format (for tests and exporters).</summary>
    public static void Save(string file, Tensor images, Tensor? labels)
    {
        var tensors = new Dictionary<string, Tensor> { ["images"] = images };
        if (labels is not null) tensors["labels"] = labels.to(ScalarType.Int64);
        string tmp = file + ".tmp-dir";
        CheckpointWriter.WriteAll(tmp, tensors, new CheckpointWriterOptions { Overwrite = true });
        File.Move(Path.Combine(tmp, Checkpoint.SingleFileName), file, overwrite: true);
        Directory.Delete(tmp, true);
    }
}
