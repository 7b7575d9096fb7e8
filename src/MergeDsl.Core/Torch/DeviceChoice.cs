using TorchSharp;

namespace MergeDsl.Core.Torch;

/// <summary>What the user asked for with <c>--device</c>.</summary>
public enum DeviceRequest
{
    /// <summary>CUDA when this build has it and a GPU is visible, otherwise CPU.</summary>
    Auto,
    /// <summary>Always the CPU.</summary>
    Cpu,
    /// <summary>CUDA, or a clear error when it is not available.</summary>
    Cuda,
}

/// <summary>Raised when the requested device cannot be had.</summary>
public sealed class DeviceUnavailableException(string message) : Exception(message);

/// <summary>Turns a <see cref="DeviceRequest"/> into a TorchSharp device.</summary>
public static class DeviceChoice
{
    /// <summary>Parses <c>auto</c>, <c>cpu</c> or <c>cuda</c> (case-insensitive).</summary>
    public static DeviceRequest Parse(string text) => text.Trim().ToLowerInvariant() switch
    {
        "auto" => DeviceRequest.Auto,
        "cpu" => DeviceRequest.Cpu,
        "cuda" or "gpu" => DeviceRequest.Cuda,
        _ => throw new SettingException("device", $"unknown device '{text}' (expected auto, cpu or cuda)"),
    };

    /// <summary>
    /// True when CUDA can be used. A CPU-only build throws from the probe on some platforms, which
    /// means "no" here.
    /// </summary>
    public static bool CudaAvailable()
    {
        try { return torch.cuda.is_available(); }
        catch (Exception) { return false; }
    }

    /// <summary>The device to run on for a request.</summary>
    public static torch.Device Resolve(DeviceRequest request)
    {
        TorchRuntime.EnsureLoadable();
        return request switch
        {
            DeviceRequest.Cpu => torch.CPU,
            DeviceRequest.Cuda when CudaAvailable() => torch.CUDA,
            DeviceRequest.Cuda => throw new DeviceUnavailableException(
                "cuda: CUDA is not available (this build uses TorchSharp-cpu; rebuild with -p:MergeDslCuda=true on a machine with an NVIDIA GPU)"),
            _ => CudaAvailable() ? torch.CUDA : torch.CPU,
        };
    }
}
