using System.Diagnostics;
using System.Text.Json;

namespace MergeDsl.Core.Checkpoints;

/// <summary>
/// The content of <see cref="OutputMarkers.Unfinished"/>: which process owns a temporary output folder. The process
/// start time tells a live owner from an unrelated process that was later given the same pid.
/// </summary>
/// <param name="Pid">The owner's process id.</param>
/// <param name="ProcessStart">The owner's start time (UTC).</param>
/// <param name="Host">The machine the owner runs on.</param>
/// <param name="StartedUtc">When the folder was created.</param>
public sealed record UnfinishedMarker(int Pid, DateTime ProcessStart, string Host, DateTime StartedUtc)
{
    /// <summary>Start times read back from the OS are only as exact as its clock ticks.</summary>
    static readonly TimeSpan StartTolerance = TimeSpan.FromSeconds(1);

    /// <summary>The marker of the current process, created now.</summary>
    public static UnfinishedMarker ForCurrentProcess()
    {
        using var self = Process.GetCurrentProcess();
        return new UnfinishedMarker(Environment.ProcessId, self.StartTime.ToUniversalTime(), Environment.MachineName, DateTime.UtcNow);
    }

    /// <summary>Writes the marker file into <paramref name="folder"/> (must not exist yet).</summary>
    public void WriteTo(string folder)
    {
        var o = new { pid = Pid, processStart = ProcessStart.ToString("O"), host = Host, startedUtc = StartedUtc.ToString("O") };
        using var stream = new FileStream(Path.Combine(folder, OutputMarkers.Unfinished), FileMode.CreateNew, FileAccess.Write);
        JsonSerializer.Serialize(stream, o);
        stream.Flush(flushToDisk: true);
    }

    /// <summary>The marker of <paramref name="folder"/>, or null when it has none or it cannot be read.</summary>
    public static UnfinishedMarker? TryRead(string folder)
    {
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllBytes(Path.Combine(folder, OutputMarkers.Unfinished)));
            var o = doc.RootElement;
            static DateTime Time(JsonElement e) =>
                DateTime.Parse(e.GetString()!, null, System.Globalization.DateTimeStyles.RoundtripKind).ToUniversalTime();
            return new UnfinishedMarker(o.GetProperty("pid").GetInt32(), Time(o.GetProperty("processStart")),
                o.GetProperty("host").GetString()!, Time(o.GetProperty("startedUtc")));
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or JsonException or FormatException
                                      or InvalidOperationException or KeyNotFoundException)
        {
            return null;
        }
    }

    /// <summary>
    /// True when the owner is a running process on this machine: same pid and same start time. An owner on another
    /// host cannot be checked and counts as alive.
    /// </summary>
    public bool OwnerAlive()
    {
        if (!string.Equals(Host, Environment.MachineName, StringComparison.Ordinal)) return true;
        try
        {
            using var p = Process.GetProcessById(Pid);
            if (p.HasExited) return false;
            return (p.StartTime.ToUniversalTime() - ProcessStart).Duration() <= StartTolerance;
        }
        catch (Exception e) when (e is ArgumentException or InvalidOperationException or System.ComponentModel.Win32Exception)
        {
            return false;
        }
    }
}
